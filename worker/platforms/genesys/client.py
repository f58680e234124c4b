"""Genesys Cloud (api-contract.md §2).

- Token: client credentials at https://login.{region}/oauth/token (FOLLOWUP_GENESYS_REGION),
  the API at https://api.{region}, unless FOLLOWUP_TOKEN_URL / FOLLOWUP_API_BASE_URL say.
- The call: on behalf of an agent, for a client-credentials token, POST
  /api/v2/conversations/calls/user/{userId} with a flat CreateCallRequest. The request's
  metadata rides along as `attributes` (kept on the customer participant), every value a
  string, with the request and contact ids. callerId, callerIdName and callFromQueueId are
  sent only when configured. Nothing else: the platform refuses unknown fields with 400.
- Availability: GET /api/v2/users/{userId}?expand=conversationSummary; calls in progress
  are conversationSummary.call.contactCenter.active.
- Did the call happen: POST /api/v2/analytics/conversations/details/query for the agent's
  outbound voice conversations to the number (`dnis`, tel:+E164), over a short interval from
  the send marker, one small page. A conversation is this request's only if its customer
  participant carries the `followup_request_id` attribute the call was sent with (a
  conversation without it, made by hand, is never taken) and it started within the interval.
  Analytics can lag by minutes.

Neither question may cost what it answers: a throttle (429), an outage (5xx, a timeout) or an
answer that is not the contract's shape raises NoAnswer ("ask again later"), never a guess.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx

from followup.config.settings import Settings
from followup.tasks.request import FollowUpRequest
from followup.worker.classify import Verdict, classify_answer, retry_after
from followup.worker.http import Answer, PlatformHttp, answer_json, answer_moment, dig
from followup.worker.platforms.base import (
    CallRequest,
    LookupForbidden,
    NoAnswer,
    TokenRequest,
)
from followup.worker.platforms.conversations.client import client_credentials
from followup.worker.platforms.genesys import profile

PERMISSIONS = ("conversation:call:add", "conversation:agentlessCall:add")
# The conversation of our call starts after the send marker (on the status store's clock;
# the platform's may differ by this much) and before the create-call request's deadline.
CLOCK_SKEW = timedelta(seconds=5)
STARTED_AFTER = timedelta(seconds=130)  # FOLLOWUP_HTTP_TIMEOUT_S is at most 120
PAGE_SIZE = 25  # one agent's calls to one number in two minutes: a handful at most
LOOKUP_BODY_BYTES = 1024 * 1024  # a page of detail records can be far larger than 64 KiB
ANALYTICS_PERMISSION = "analytics:conversationDetail:view"
REQUEST_ATTRIBUTE = "followup_request_id"  # sent with every call (call_request)


class GenesysPlatform:
    name = "genesys"
    reconcile_by_default = profile.PROFILE.reconcile_by_default
    match_window_s = None
    check_busy_by_default = profile.PROFILE.check_busy_by_default
    forbidden_hint = (
        f"the OAuth client's role lacks the permission this call needs (any of "
        f"{' or '.join(PERMISSIONS)}); add it to the role of the client named by "
        "FOLLOWUP_CLIENT_ID"
    )

    def __init__(self, settings: Settings, http: PlatformHttp) -> None:
        self._settings = settings
        self.headers: dict[str, str] = {}
        self._http = http
        cfg = profile.of(settings)
        self._configured = {
            name: value
            for name, value in (
                ("callerId", cfg.caller_id),
                ("callerIdName", cfg.caller_id_name),
                ("callFromQueueId", cfg.queue_id),
            )
            if value
        }

    def token_request(self) -> TokenRequest:
        return client_credentials(self._settings)

    def api_base(self, token: str) -> str:
        return self._settings.effective_api_base_url

    def call_request(self, request: FollowUpRequest, request_id: str) -> CallRequest:
        attributes = {key: _text(value) for key, value in request.metadata.items()}
        attributes[REQUEST_ATTRIBUTE] = request_id
        attributes["followup_contact_id"] = request.contact_id
        body = {"phoneNumber": request.phone_number, "attributes": attributes, **self._configured}
        path = f"/api/v2/conversations/calls/user/{quote(request.user_id, safe='')}"
        return CallRequest("POST", path, json=body)

    def read_answer(self, answer: Answer) -> Verdict:
        return classify_answer(
            answer,
            forbidden_hint=self.forbidden_hint,
            max_retry_after_s=self._settings.max_retry_after_s,
        )

    def agent_busy(self, base: str, user_id: str, token: str) -> bool | None:
        """True if the agent has a call in progress; None if the platform cannot say (no
        permission, no such user, an answer of another shape): the call goes. Raises
        NoAnswer for a throttle or an outage: the call waits."""
        answer = self._ask(
            "GET",
            f"{base}/api/v2/users/{quote(user_id, safe='')}",
            endpoint="availability",
            params={"expand": "conversationSummary"},
            headers={"Authorization": f"Bearer {token}"},
        )
        if answer.status != 200:
            return None
        active = dig(answer_json(answer), "conversationSummary", "call", "contactCenter", "active")
        if not isinstance(active, int) or isinstance(active, bool):
            return None
        return active > 0

    def find_call(
        self, base: str, request_id: str, user_id: str, number: str, sent_at: float, token: str
    ) -> str | None:
        """The conversation id of this request's call, if analytics has it; raises
        LookupForbidden or NoAnswer."""
        sent = datetime.fromtimestamp(sent_at, UTC)
        earliest, latest = sent - CLOCK_SKEW, sent + STARTED_AFTER
        query = {
            "interval": f"{_iso(earliest)}/{_iso(latest)}",
            "order": "asc",
            "orderBy": "conversationStart",
            "paging": {"pageSize": PAGE_SIZE, "pageNumber": 1},
            "segmentFilters": [
                {
                    "type": "and",
                    "predicates": [
                        {"dimension": "userId", "value": user_id},
                        {"dimension": "dnis", "value": f"tel:{number}"},
                        {"dimension": "direction", "value": "outbound"},
                        {"dimension": "mediaType", "value": "voice"},
                    ],
                }
            ],
        }
        answer = self._ask(
            "POST",
            f"{base}/api/v2/analytics/conversations/details/query",
            endpoint="analytics",
            json=query,
            headers={"Authorization": f"Bearer {token}"},
            max_body_bytes=LOOKUP_BODY_BYTES,
        )
        if answer.status == 403:
            raise LookupForbidden(ANALYTICS_PERMISSION)
        if answer.status != 200:
            raise NoAnswer(f"HTTP {answer.status}")
        body = answer_json(answer)
        if not isinstance(body, dict):
            raise NoAnswer("an answer that is not a JSON object")
        conversations = body.get("conversations", [])
        if not isinstance(conversations, list):
            raise NoAnswer("an answer without a list of conversations")
        return next(
            (
                c["conversationId"]
                for c in conversations
                if _ours(c, request_id, user_id, number, earliest, latest)
            ),
            None,
        )

    def _ask(self, method: str, url: str, *, endpoint: str, **kwargs: Any) -> Answer:
        """One question; NoAnswer for a transport error, a 401, a throttle or a 5xx, or an
        answer larger than its bound."""
        try:
            answer = self._http.request(method, url, endpoint=endpoint, **kwargs)
        except httpx.HTTPError as exc:
            raise NoAnswer(type(exc).__name__) from None
        status = answer.status
        if status == 401:
            raise NoAnswer("HTTP 401", reauth=True)
        if status in (408, 429) or status >= 500:
            waited, _ = retry_after(
                answer.headers.get("retry-after"), self._settings.max_retry_after_s
            )
            raise NoAnswer(f"HTTP {status}", retry_after_s=waited, throttled=status == 429)
        if answer.truncated:
            bound = kwargs.get("max_body_bytes")
            raise NoAnswer(f"an answer over {bound or 'the'} bytes")
        return answer


def build(settings: Settings, http: PlatformHttp) -> GenesysPlatform:
    return GenesysPlatform(settings, http)


def _text(value: object) -> str:
    """Attributes are strings: true/false and numbers as JSON writes them, null as ''."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _ours(
    conversation: Any,
    request_id: str,
    user_id: str,
    number: str,
    earliest: datetime,
    latest: datetime,
) -> bool:
    """This request's call: it carries this request's id, the same agent dialled the same
    number in it, and it started after the send marker, within the request's deadline."""
    if not isinstance(conversation, dict) or not isinstance(
        conversation.get("conversationId"), str
    ):
        return False
    participants = [p for p in _list(conversation.get("participants")) if isinstance(p, dict)]
    sent_with = [dig(p, "attributes", REQUEST_ATTRIBUTE) for p in participants]  # any type
    users = {p.get("userId") for p in participants if isinstance(p.get("userId"), str)}
    dialled = {
        s.get("dnis")
        for p in participants
        for s in _list(p.get("sessions"))
        if isinstance(s, dict) and isinstance(s.get("dnis"), str)
    }
    started = answer_moment(conversation.get("conversationStart"), naive_is_utc=False)
    return (
        request_id in sent_with
        and user_id in users
        and f"tel:{number}" in dialled
        and started is not None
        and earliest <= started <= latest
    )


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")
