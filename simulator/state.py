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
    "201_deep",  # a 201 whose id is nested DEEP_NESTING deep (the call is not created)
)
# Token-endpoint faults (token_script): an HTTP status, or a token no client may use.
TOKEN_FAULT_KINDS = (
    "400",
    "401",
    "429",
    "500",
    "503",
    "token_crlf",
    "token_null",
    "token_unicode",
    "token_deep",  # {"access_token": [[[...]]]}, nested DEEP_NESTING deep
    "refusal_deep",  # a 401 whose error is nested DEEP_NESTING deep
)
# Faults of the questions (availability_script, analytics_script): an HTTP status with the
# platform's error body (429 with Retry-After), valid JSON of the wrong shape, or valid JSON
# nested DEEP_NESTING deep (a parser without a depth bound raises RecursionError on it).
QUERY_FAULT_KINDS = ("429", "500", "502", "503", "504", "odd_shape", "deep")
DEEP_NESTING = 5000


def deep_json(inner: str = "") -> bytes:
    """[[[...]]] nested DEEP_NESTING deep, around inner."""
    return ("[" * DEEP_NESTING + inner + "]" * DEEP_NESTING).encode()


# cxone only (api-contract.md §4): answers that exist only there, and the shapes of its errors.
CXONE_FAULT_KINDS = (
    "202_body",  # a success whose body carries {"contactId": ...} (one client reads it)
    "400_header",  # the error text only in the icStatusDescription header, the body empty
    "400_message",  # {"message": ...}
    "400_error",  # {"error": ...}
    "403",
    "404",
    "429_bare",  # a 429 without Retry-After (CXone does not always send one)
    "503_bare",
)
CXONE_TOKEN_FAULT_KINDS = ("jwt_no_tenant", "token_opaque")
CXONE_QUERY_FAULT_KINDS = ("429_bare", "503_bare", "hang")
DISCOVERY_FAULT_KINDS = ("404", "500", "503", "no_endpoint", "hang")
# What an access key's API user may do (simulator names: no public list of CXone's exists).
CXONE_CALLBACK_PERMISSION = "callbacks:create"
CXONE_AGENTS_PERMISSION = "agents:view"
CXONE_CONTACTS_PERMISSION = "contacts:view"


@dataclass
class Client:
    secret: str
    scopes: frozenset[str]


@dataclass
class Token:
    client_id: str
    scopes: frozenset[str]
    expires_at: float
    key_id: str | None = None  # cxone: the access key whose API user the token acts for


@dataclass
class Faults:
    """Faults for the create-call endpoint: a script consumed first, then random ones."""

    script: deque[str] = field(default_factory=deque)
    by_contact: dict[str, deque[str]] = field(default_factory=dict)
    by_number: dict[str, deque[str]] = field(default_factory=dict)  # the number as sent
    token_script: deque[str] = field(default_factory=deque)
    discovery_script: deque[str] = field(default_factory=deque)  # cxone
    rate: float = 0.0
    kinds: tuple[str, ...] = ("503",)
    call_latency_s: float = 0.0
    token_latency_s: float = 0.0
    retry_after: str = "1"
    hang_s: float = 30.0
    rng: random.Random = field(default_factory=random.Random)
    analytics_lag_s: float = 0.0  # a call shows in analytics this long after it began
    busy_until: dict[str, float] = field(default_factory=dict)  # agent -> on a call until
    agent_states: dict[str, str] = field(default_factory=dict)  # cxone: agent -> agentStateName
    contact_active_s: float = 60.0  # cxone: a callback is an active contact this long, then
    # a completed one
    rate_limit: float = 0.0  # create-call requests a second it takes; more get a 429
    rate_window_s: float = 1.0  # over what sliding window (Genesys counts per minute)
    recent: deque[float] = field(default_factory=deque)
    # The questions (availability, analytics; cxone: agent states, contacts): scripted
    # answers, consumed first.
    availability_script: deque[str] = field(default_factory=deque)
    analytics_script: deque[str] = field(default_factory=deque)
    # genesys: filler conversations analytics adds to each answer (the agent's calls to
    # other numbers, a few KB each); a limit on every request of one token, calls and
    # questions alike (Genesys counts per token).
    analytics_padding: int = 0
    token_rate_limit: float = 0.0
    token_recent: dict[str, deque[float]] = field(default_factory=dict)

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

    def token_over_the_limit(self, token: str, now: float) -> bool:
        """At most token_rate_limit x rate_window_s requests of one token in any window."""
        if not self.token_rate_limit:
            return False
        recent = self.token_recent.setdefault(token, deque())
        while recent and recent[0] <= now - self.rate_window_s:
            recent.popleft()
        if len(recent) >= self.token_rate_limit * self.rate_window_s:
            return True
        recent.append(now)
        return False

    def next_call_fault(self, contact_id: str, number: str = "") -> str | None:
        mine = self.by_contact.get(contact_id) or self.by_number.get(number)
        script = mine if mine else self.script
        if script:
            fault = script.popleft()
            return None if fault in ("ok", "200") else fault
        if self.rate and self.rng.random() < self.rate:
            return self.rng.choice(self.kinds)
        return None


@dataclass
class CxoneConfig:
    """What a CXone tenant has (api-contract.md §4): access keys, skills, where its API is."""

    access_keys: dict[str, Client] = field(default_factory=dict)  # key id -> secret, permissions
    skills: frozenset[int] | None = None  # None: every skill id exists
    tenant_id: str = "11eb0c3a-5f1e-4d2b-9a7c-0000000f0110"
    api_endpoint: str | None = None  # None: this server itself
    api_versions: frozenset[str] = frozenset({"12.0", "23.0", "33.0"})
    phone_format: str = "e164"  # or "digits", "national" (a tenant's dialling plan)
    phone_region: str = "US"  # for "national"
    jwt_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    next_contact: int = field(default_factory=lambda: random.randrange(10**11, 9 * 10**11))

    def new_contact_id(self) -> str:
        self.next_contact += 1
        return str(self.next_contact)


@dataclass
class SimState:
    clients: dict[str, Client]
    users: frozenset[str] | None  # None: every user id exists
    token_ttl_s: int = 86400
    dialect: str = "conversations"  # or "genesys", "cxone" (api-contract.md §1, §2, §4)
    # /_sim/* shows bearer tokens and phone numbers only when asked (--show-secrets: tests).
    show_secrets: bool = False
    tokens: dict[str, Token] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)  # every create-call, any answer
    queries: list[dict[str, Any]] = field(default_factory=list)  # availability, analytics asks
    token_requests: int = 0
    discovery_requests: int = 0
    faults: Faults = field(default_factory=Faults)
    cxone: CxoneConfig = field(default_factory=CxoneConfig)

    def issue_token(
        self, client_id: str, *, value: str | None = None, key_id: str | None = None
    ) -> tuple[str, Token]:
        """A token for a client (cxone: for an access key's API user, with its permissions)."""
        scopes = self.cxone.access_keys[key_id].scopes if key_id else self.clients[client_id].scopes
        value = value or secrets.token_urlsafe(24)
        token = Token(client_id, scopes, time.monotonic() + self.token_ttl_s, key_id)
        self.tokens[value] = token
        return value, token

    def token_for(self, value: str) -> Token | None:
        token = self.tokens.get(value)
        if token is None or token.expires_at <= time.monotonic():
            return None
        return token

    def accept_call(
        self,
        body: dict[str, Any] | None,
        headers: dict[str, str],
        client_id: str,
        authorization: str,
        *,
        user: str,
        number: str,
        call_id: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        call = {
            "id": call_id or str(uuid.uuid4()),
            "received_at": time.time(),
            "body": body,
            "user_id": user,
            "number": number,
            "authorization": authorization,
            "client_id": client_id,
            "correlation_id": headers.get("inin-correlation-id"),
            **extra,
        }
        self.calls.append(call)
        return call

    def reset(self) -> None:
        """Forget calls, requests, questions and faults; issued tokens stay valid."""
        self.calls.clear()
        self.requests.clear()
        self.queries.clear()
        self.token_requests = 0
        self.discovery_requests = 0
        self.faults = Faults()


def parse_client(spec: str, flag: str = "--client") -> tuple[str, Client]:
    """'id:secret:scope1,scope2' -> (id, Client)."""
    parts = spec.split(":", 2)
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise ValueError(f"{flag} '{spec}': expected id:secret:scope1,scope2")
    scopes = frozenset(s for s in parts[2].replace(" ", ",").split(",") if s)
    return parts[0], Client(parts[1], scopes)
