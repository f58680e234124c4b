"""What the simulator knows: OAuth clients, issued tokens, agents, accepted calls, faults."""

from __future__ import annotations

import random
import secrets
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

# Create-call faults. Errors and odd answers create no conversation; drop_after and hang
# create it (the platform took the call; the client never hears).
FAULT_KINDS = (
    "400",
    "408",
    "409",
    "422",
    "425",
    "429",
    "500",
    "502",
    "503",
    "504",
    "drop_before",
    "drop_after",
    "hang",
    "204",  # 2xx, and no conversation id: what a catch-all service behind a wrong URL says
    "201_empty",
    "201_no_id",
    "200_html",
    "huge_400",  # a 10 MB message and 10,000 errors[]
    "many_errors_400",  # 1,000 errors[] in a body of 40 KB
    "echo_number",  # a 400 that writes the dialled number in many formats, code included
)
# Token-endpoint faults (token_script): an HTTP status, or a token no client may use.
TOKEN_FAULT_KINDS = ("400", "401", "429", "500", "503", "token_crlf", "token_null", "token_unicode")


@dataclass
class Client:
    secret: str
    scopes: frozenset[str]


@dataclass
class Token:
    client_id: str
    scopes: frozenset[str]
    expires_at: float


@dataclass
class Faults:
    """Faults for the create-call endpoint: a script consumed first, then random ones."""

    script: deque[str] = field(default_factory=deque)
    by_contact: dict[str, deque[str]] = field(default_factory=dict)
    token_script: deque[str] = field(default_factory=deque)
    rate: float = 0.0
    kinds: tuple[str, ...] = ("503",)
    call_latency_s: float = 0.0
    token_latency_s: float = 0.0
    retry_after: str = "1"
    hang_s: float = 30.0
    rng: random.Random = field(default_factory=random.Random)
    analytics_lag_s: float = 0.0  # a call shows in analytics this long after it began
    busy_until: dict[str, float] = field(default_factory=dict)  # agent -> on a call until
    rate_limit: float = 0.0  # create-call requests a second it takes; more get a 429
    rate_window_s: float = 1.0  # over what sliding window (Genesys counts per minute)
    recent: deque[float] = field(default_factory=deque)

    def over_the_limit(self, now: float) -> bool:
        """At most rate_limit x rate_window_s requests in any sliding window that long."""
        if not self.rate_limit:
            return False
        while self.recent and self.recent[0] <= now - self.rate_window_s:
            self.recent.popleft()
        if len(self.recent) >= self.rate_limit * self.rate_window_s:
            return True
        self.recent.append(now)
        return False

    def next_call_fault(self, contact_id: str) -> str | None:
        mine = self.by_contact.get(contact_id)
        script = mine if mine else self.script
        if script:
            fault = script.popleft()
            return None if fault in ("ok", "200") else fault
        if self.rate and self.rng.random() < self.rate:
            return self.rng.choice(self.kinds)
        return None


@dataclass
class SimState:
    clients: dict[str, Client]
    users: frozenset[str] | None  # None: every user id exists
    token_ttl_s: int = 86400
    dialect: str = "conversations"  # or "genesys" (api-contract.md §1, §2)
    tokens: dict[str, Token] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)  # every create-call, any answer
    token_requests: int = 0
    faults: Faults = field(default_factory=Faults)

    def issue_token(self, client_id: str) -> tuple[str, Token]:
        client = self.clients[client_id]
        value = secrets.token_urlsafe(24)
        token = Token(client_id, client.scopes, time.monotonic() + self.token_ttl_s)
        self.tokens[value] = token
        return value, token

    def token_for(self, value: str) -> Token | None:
        token = self.tokens.get(value)
        if token is None or token.expires_at <= time.monotonic():
            return None
        return token

    def accept_call(
        self,
        body: dict[str, Any],
        headers: dict[str, str],
        client_id: str,
        authorization: str,
        *,
        user: str,
        number: str,
    ) -> dict[str, Any]:
        call = {
            "id": str(uuid.uuid4()),
            "received_at": time.time(),
            "body": body,
            "user_id": user,
            "number": number,
            "authorization": authorization,
            "client_id": client_id,
            "correlation_id": headers.get("inin-correlation-id"),
        }
        self.calls.append(call)
        return call

    def reset(self) -> None:
        """Forget calls, requests and faults; issued tokens stay valid."""
        self.calls.clear()
        self.requests.clear()
        self.token_requests = 0
        self.faults = Faults()


def parse_client(spec: str) -> tuple[str, Client]:
    """'id:secret:scope1,scope2' -> (id, Client)."""
    parts = spec.split(":", 2)
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise ValueError(f"--client '{spec}': expected id:secret:scope1,scope2")
    scopes = frozenset(s for s in parts[2].replace(" ", ",").split(",") if s)
    return parts[0], Client(parts[1], scopes)
