"""What every platform's client provides (`Platform`), and the small types it speaks in.

A platform owns everything about one contact-center API: how a token is obtained, where the
API is, the create-call request, how an answer reads, and the two optional questions (is the
agent busy? did a call happen?). The pipeline, the runtime, the reconciler and the token
cache use only this interface; a platform that cannot answer a question raises
NotSupported, never an `if dialect == ...` elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from followup.tasks.request import FollowUpRequest
from followup.worker.classify import Verdict
from followup.worker.http import Answer


@dataclass(frozen=True)
class TokenRequest:
    """How this platform grants a token: a form POSTed to `url` with HTTP Basic `auth`.

    `identity` names the credentials (the OAuth client, or the access key) for the fleet's
    credentials pause; `check` is what a refusal tells a person to check. The form and the
    auth carry secrets: they never appear in a repr."""

    url: str
    form: dict[str, str] = field(repr=False)
    auth: tuple[str, str] = field(repr=False)
    identity: str
    check: str


@dataclass(frozen=True)
class CallRequest:
    """A create-call request below the API's base, built before the send marker is written."""

    method: str
    path: str
    params: dict[str, str] | None = None
    json: dict[str, Any] | None = None


class NotSupported(Exception):
    """This platform cannot answer that question."""


class LookupForbidden(Exception):
    """The credentials may not ask this question; the message names the permission."""


class NoAnswer(Exception):
    """The platform gave no usable answer now: ask again later, spending nothing.

    retry_after_s: what a 429 or 503 asked for (capped); throttled: a 429 (the fleet slows
    down); reauth: a 401 (the token is dropped).
    """

    def __init__(
        self,
        reason: str,
        *,
        retry_after_s: float | None = None,
        throttled: bool = False,
        reauth: bool = False,
    ) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s
        self.throttled = throttled
        self.reauth = reauth


class Platform(Protocol):
    name: str
    reconcile_by_default: bool  # FOLLOWUP_RECONCILE's default
    # A lookup that matches a call by agent, number and time only: the seconds after a send
    # marker in which a call may be this request's. Another request of the same agent and
    # number sent within them of this one makes a match ambiguous: it settles nothing.
    # None: the platform's calls name their request.
    match_window_s: float | None
    check_busy_by_default: bool  # FOLLOWUP_CHECK_AGENT_BUSY's default
    headers: dict[str, str]  # sent with every API request (besides Authorization)

    def token_request(self) -> TokenRequest:
        """How to obtain a token."""

    def api_base(self, token: str) -> str:
        """Where the API is, for this token (raises TokenError if it cannot be found now)."""

    def call_request(self, request: FollowUpRequest, request_id: str) -> CallRequest:
        """The create-call request."""

    def read_answer(self, answer: Answer) -> Verdict:
        """What the create-call answer means (classify.classify_answer, for most)."""

    def agent_busy(self, base: str, user_id: str, token: str) -> bool | None:
        """True if the agent is on a call, None if the platform cannot say (the call goes);
        raises NoAnswer (ask again later) or NotSupported."""

    def find_call(
        self, base: str, request_id: str, user_id: str, number: str, sent_at: float, token: str
    ) -> str | None:
        """The id of this request's call if the platform has it; raises NoAnswer,
        LookupForbidden or NotSupported."""
