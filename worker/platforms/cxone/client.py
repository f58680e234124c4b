"""NICE CXone (api-contract.md §4): a queue callback targeted at the agent.

- Token: an OAuth 2.0 *password* grant, the API user's access key as username/password
  (FOLLOWUP_CXONE_ACCESS_KEY_ID / _SECRET), the registered application as HTTP Basic
  (FOLLOWUP_CLIENT_ID / _SECRET), at FOLLOWUP_TOKEN_URL (default: profile.DEFAULT_TOKEN_URL).
- The API: FOLLOWUP_API_BASE_URL when set; else discovered once per token, from the
  `tenantId` claim of the access token (a JWT) and GET FOLLOWUP_CXONE_DISCOVERY_URL
  ?tenantId=... (`api_endpoint`). Paths are {base}/incontactapi/services/v{version}/...,
  and every request sends Accept: application/json.
- The call: POST .../queuecallback?phoneNumber=&skill=&targetAgent=[&callerID=], no body.
  202 is placed, with `contactId` if the body has one; another 2xx is unknown; 429 and 503
  are throttles. Nothing else is sent: queuecallback
  has no field for the metadata or the contact id, and no idempotency key (a second POST
  queues a second callback; the pipeline never sends one).
- Errors: the text is the JSON `error_description`, else `message`, else `error`, else the
  `icStatusDescription` header.
- Busy: GET .../agents/{id}/states (BUSY_STATES). Did the call happen: GET
  .../contacts/active, then .../contacts/completed, by agent, number and skill, started
  after the send marker and before the call's deadline; 204 means none.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import threading
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import phonenumbers

from followup.config.redaction import mask_text
from followup.config.settings import Settings
from followup.tasks.request import FollowUpRequest
from followup.worker.classify import Verdict, classify_answer, clip, describe_exception, retry_after
from followup.worker.http import (
    Answer,
    PlatformHttp,
    answer_json,
    answer_moment,
    dig,
    read_json,
)
from followup.worker.platforms.base import (
    CallRequest,
    LookupForbidden,
    NoAnswer,
    TokenRequest,
)
from followup.worker.platforms.cxone import profile
from followup.worker.records import ErrorInfo
from followup.worker.tokens import FAILURE_HOLD_S, TokenError

BUSY_STATES = frozenset(
    {"InboundContact", "OutboundContact", "InboundConsult", "OutboundConsult", "Dialer"}
)
# A contact is this request's only if it started after its send marker and before its
# create-call request's deadline (FOLLOWUP_HTTP_TIMEOUT_S, plus LATE for clocks): nothing in a
# CXone contact names the request, and another request's callback to the same agent and
# number must never be taken for it: a match whose window holds another request's send marker
# for the same agent and number settles nothing (the reconciler asks the store). A platform
# clock behind ours can make a lookup miss its own callback: it then stays unknown for a
# person.
LATE = timedelta(seconds=1)
KEPT_BASES = 4  # the API bases of the last few tokens
CHECK_CREDENTIALS = (
    "FOLLOWUP_CXONE_ACCESS_KEY_ID, FOLLOWUP_CXONE_ACCESS_KEY_SECRET (the API user's access "
    "key), FOLLOWUP_CLIENT_ID, FOLLOWUP_CLIENT_SECRET (the registered application) and "
    "FOLLOWUP_TOKEN_URL"
)


class CxonePlatform:
    name = "cxone"
    reconcile_by_default = profile.PROFILE.reconcile_by_default
    check_busy_by_default = profile.PROFILE.check_busy_by_default
    forbidden_hint = (
        "the API user behind FOLLOWUP_CXONE_ACCESS_KEY_ID lacks the permission to create "
        "callbacks (queuecallback); grant it in that user's security profile"
    )

    def __init__(self, settings: Settings, http: PlatformHttp) -> None:
        self._settings = settings
        self._http = http
        self._cfg = profile.of(settings)
        self.headers = {"Accept": "application/json"}
        self._skill = self._cfg.skill_id
        self.match_window_s = settings.http_timeout_s + LATE.total_seconds()
        self._bases: dict[str, str] = {}
        self._lock = threading.Lock()

    # --- the token and the API's base ---------------------------------------------------

    def token_request(self) -> TokenRequest:
        key_id, key_secret = self._cfg.access_key()
        client_id, client_secret = self._settings.require_credentials()
        return TokenRequest(
            self._settings.effective_token_url,
            {"grant_type": "password", "username": key_id, "password": key_secret},
            (client_id, client_secret),
            identity=key_id,
            check=CHECK_CREDENTIALS,
        )

    def api_base(self, token: str) -> str:
        """{endpoint}/incontactapi/services/v{version}: the configured endpoint, or the one
        discovered for this token's tenant (once per token). Raises TokenError: a transient
        discovery failure (retry), or a token without a tenantId (configuration)."""
        s = self._settings
        if not s.api_discovered:
            return self._under(s.api_base_url)
        with self._lock:
            known = self._bases.get(token)
            if known is None:
                known = self._under(self._discover(token))
                if len(self._bases) >= KEPT_BASES:
                    self._bases.pop(next(iter(self._bases)))
                self._bases[token] = known
            return known

    def _under(self, endpoint: str) -> str:
        version = self._cfg.api_version
        return f"{endpoint.rstrip('/')}/incontactapi/services/v{version}"

    def _discover(self, token: str) -> str:
        tenant = tenant_of(token)
        if tenant is None:
            raise TokenError(
                Verdict(
                    "credentials",
                    error=ErrorInfo(
                        code="config.no_tenant",
                        message="the access token carries no tenantId, so the API's address "
                        "cannot be discovered: set FOLLOWUP_API_BASE_URL (e.g. "
                        "https://api-na1.niceincontact.com)",
                    ),
                ),
                60.0,
            )
        try:
            answer = self._http.request(
                "GET",
                self._cfg.discovery_url,
                endpoint="discovery",
                params={"tenantId": tenant},
                headers=self.headers,
            )
        except httpx.HTTPError as exc:
            raise _discovery_failed(describe_exception(exc).message) from None
        endpoint = dig(answer_json(answer), "api_endpoint") if answer.status == 200 else None
        if not isinstance(endpoint, str) or not usable_endpoint(endpoint):
            raise _discovery_failed(
                f"HTTP {answer.status} without a usable api_endpoint (an https URL without "
                "userinfo, query or fragment)"
            )
        return endpoint

    # --- the call -----------------------------------------------------------------------

    def call_request(self, request: FollowUpRequest, request_id: str) -> CallRequest:
        """The parameters in the query string, no body; metadata and contact id stay in the
        status store (queuecallback has no field for them)."""
        params = {
            "phoneNumber": self.dialled(request.phone_number),
            "skill": str(self._skill),
            "targetAgent": request.user_id,
        }
        if self._cfg.caller_id:
            params["callerID"] = self._cfg.caller_id
        return CallRequest("POST", "/queuecallback", params=params)

    def dialled(self, number: str) -> str:
        """The number as the tenant's dialling plan wants it (FOLLOWUP_CXONE_PHONE_FORMAT)."""
        style = self._cfg.phone_format
        if style == "digits":
            return number.removeprefix("+")
        if style == "national":
            parsed = phonenumbers.parse(number, None)
            national = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
            return "".join(c for c in national if c.isdigit())
        return number

    def read_answer(self, answer: Answer) -> Verdict:
        """202 is placed; any other 2xx is `unknown` (a lookup may settle it). 429 and 503,
        with or without Retry-After, are throttles: no attempt spent, the fleet slows."""
        if answer.status == 202:
            return Verdict("placed", conversation_id=_contact_id(answer), status=answer.status)
        if 200 <= answer.status < 300:
            error = ErrorInfo(
                status=answer.status,
                code="answer.not_202",
                message=f"HTTP {answer.status}, not CXone's 202 for a queued callback: whether "
                "the callback was queued is unknown",
            )
            return Verdict("unknown", error=error, status=answer.status)
        verdict = classify_answer(
            answer,
            forbidden_hint=self.forbidden_hint,
            max_retry_after_s=self._settings.max_retry_after_s,
        )
        error = cxone_error(answer)
        if answer.status == 403:
            error = error.model_copy(update={"message": f"{error.message}: {self.forbidden_hint}"})
        return Verdict(
            verdict.kind,
            retry_after_s=verdict.retry_after_s,
            retry_after_asked_s=verdict.retry_after_asked_s,
            error=error,
            status=verdict.status,
            throttled=answer.status in (429, 503),
        )

    # --- the questions ------------------------------------------------------------------

    def agent_busy(self, base: str, user_id: str, token: str) -> bool | None:
        answer = self._ask(base, f"/agents/{quote(user_id, safe='')}/states", {}, token)
        if answer.status != 200:
            return None
        states = dig(answer_json(answer), "agentStates")
        name = dig(states[0], "agentStateName") if isinstance(states, list) and states else None
        return name in BUSY_STATES if isinstance(name, str) else None

    def find_call(
        self, base: str, request_id: str, user_id: str, number: str, sent_at: float, token: str
    ) -> str | None:
        earliest = datetime.fromtimestamp(sent_at, UTC)
        latest = earliest + timedelta(seconds=self.match_window_s)
        common = {
            "agentId": user_id,
            "skillId": str(self._skill),
            "toAddress": self.dialled(number),
        }
        asks = (
            ("/contacts/active", {**common, "updatedSince": _iso(earliest)}, "activeContacts"),
            (
                "/contacts/completed",
                {**common, "startDate": _iso(earliest), "endDate": _iso(latest)},
                "completedContacts",
            ),
        )
        for path, params, key in asks:
            answer = self._ask(base, path, params, token)
            if answer.status == 204:
                continue
            if answer.status == 403:
                raise LookupForbidden("the API user's permission to view contacts")
            if answer.status != 200:
                raise NoAnswer(f"HTTP {answer.status}")
            body = answer_json(answer)
            if not isinstance(body, dict):
                raise NoAnswer("an answer that is not a JSON object")
            contacts = body.get(key, [])
            if not isinstance(contacts, list):
                raise NoAnswer(f"an answer without a list of {key}")
            for contact in contacts:
                found = self._ours(contact, user_id, number, earliest, latest)
                if found is not None:
                    return found
        return None

    def _ours(
        self, contact: Any, user_id: str, number: str, earliest: datetime, latest: datetime
    ) -> str | None:
        """The contact's id if it is this agent's callback on our skill to this number,
        started after the send marker, within the request's deadline."""
        if not isinstance(contact, dict):
            return None
        agents = {str(contact.get("agentId")), str(contact.get("targetAgentId"))}
        started = answer_moment(
            contact.get("startDate") or contact.get("contactStart"), naive_is_utc=True
        )
        to = contact.get("toAddress")
        contact_id = contact.get("contactId")
        if (
            user_id in agents
            and str(contact.get("skillId")) == str(self._skill)
            and isinstance(to, str)
            and _digits(to) == _digits(self.dialled(number))
            and started is not None
            and earliest <= started <= latest
            and isinstance(contact_id, int | str)
            and str(contact_id).isdigit()
        ):
            return str(contact_id)
        return None

    def _ask(self, base: str, path: str, params: dict[str, str], token: str) -> Answer:
        try:
            answer = self._http.request(
                "GET",
                base + path,
                endpoint="availability" if path.startswith("/agents") else "lookup",
                params=params or None,
                headers={**self.headers, "Authorization": f"Bearer {token}"},
                max_body_bytes=1024 * 1024,
            )
        except httpx.HTTPError as exc:
            raise NoAnswer(type(exc).__name__) from None
        status = answer.status
        if status == 401:
            raise NoAnswer("HTTP 401", reauth=True)
        if status in (408, 429) or status >= 500:
            cap = self._settings.max_retry_after_s
            waited, _ = retry_after(answer.headers.get("retry-after"), cap)
            throttled = status in (429, 503)
            raise NoAnswer(f"HTTP {status}", retry_after_s=waited, throttled=throttled)
        if answer.truncated:
            raise NoAnswer("an answer over 1 MiB")
        return answer


def build(settings: Settings, http: PlatformHttp) -> CxonePlatform:
    return CxonePlatform(settings, http)


def usable_endpoint(url: str) -> bool:
    """An https URL with a host and no userinfo, query or fragment; http only for a
    loopback host (the simulator). A discovered address is where the token goes."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    if not host or "@" in parts.netloc or "?" in url or "#" in url:
        return False
    if parts.scheme == "https":
        return True
    if parts.scheme != "http":
        return False
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tenant_of(token: str) -> str | None:
    """The `tenantId` claim of a JWT access token (its payload, read without checking the
    signature: it only says where to ask), or None."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
    except (ValueError, binascii.Error):
        return None
    claims = read_json(payload)
    tenant = claims.get("tenantId") if isinstance(claims, dict) else None
    return tenant if isinstance(tenant, str) and tenant else None


def cxone_error(answer: Answer) -> ErrorInfo:
    """CXone's error text: the JSON error_description, else message, else error, else the
    icStatusDescription header; clipped and masked."""
    text, code = "", ""
    body = answer_json(answer)
    if isinstance(body, dict):
        for name in ("error_description", "message", "error"):
            if isinstance(body.get(name), str) and body[name]:
                text = body[name]
                break
        if isinstance(body.get("error"), str):
            code = body["error"]
    text = text or answer.headers.get("icStatusDescription", "")
    return ErrorInfo(
        status=answer.status,
        code=clip(mask_text(code), 80) or f"http.{answer.status}",
        message=clip(mask_text(text)) or f"HTTP {answer.status}",
    )


def _discovery_failed(why: str) -> TokenError:
    return TokenError(
        Verdict(
            "retry",
            error=ErrorInfo(
                code="discovery.failed",
                message=f"the API's address could not be discovered ({why}); retried, no "
                "attempt spent (or set FOLLOWUP_API_BASE_URL)",
            ),
        ),
        FAILURE_HOLD_S,
    )


def _contact_id(answer: Answer) -> str | None:
    value = dig(answer_json(answer), "contactId")
    if isinstance(value, int | str) and not isinstance(value, bool) and str(value).isdigit():
        return str(value)
    return None


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")
