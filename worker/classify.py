"""What one attempt's answer means (api-contract.md §3), as a pure function.

The one rule that matters most: anything that may have reached the platform after the body
left is `unknown`, never `retry`: a second create-call POST can call a customer twice. And
nothing the platform sends can make a record or a log line grow: messages are clipped,
`errors[]` is capped, exception text (which can carry a header) is never kept.
"""

from __future__ import annotations

import email.utils
import re
import time
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from followup.config.redaction import mask_text
from followup.worker.http import Answer, answer_json, dig
from followup.worker.records import ErrorInfo

Kind = Literal["placed", "retry", "fail", "reauth", "unknown", "lost", "credentials"]
# 408 and 425: the server says it did not process the request (RFC 9110 §15.5.9, RFC 8470).
BACKOFF = {408, 425, 500, 502, 504}
THROTTLED = {429, 503}

MESSAGE_CHARS = 300
CODE_CHARS = 80
MAX_ERRORS = 10
_DELAY_SECONDS = re.compile(r"[0-9]{1,9}")  # ASCII only: str.isdigit() also takes '²'


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    conversation_id: str | None = None
    retry_after_s: float | None = None  # what will be waited: Retry-After, capped
    retry_after_asked_s: float | None = None  # what the platform asked for
    error: ErrorInfo | None = None
    status: int | None = None  # the HTTP status, if the platform answered
    seconds: float | None = None  # how long the request took
    from_token: bool = False  # no token could be had: the call itself never left
    throttled: bool = False  # the platform reads this answer as a throttle (e.g. a 503 too)

    @property
    def spends(self) -> bool:
        """Does this answer spend an attempt? Only one that reached the platform and failed
        does: not a 429, a 503 with Retry-After, or a request that never left (refused,
        connect or pool timeout; a token that could not be had)."""
        if self.kind != "retry":
            return True
        if self.status is None or self.status == 429 or self.throttled:
            return False
        return not (self.status == 503 and self.retry_after_s is not None)

    @property
    def health(self) -> Literal["ok", "failure", ""]:
        """What the answer says of the platform, for the breaker: a transport failure or a
        5xx is a failure; a 2xx or a 4xx means it is up. A 429, or a 503 with Retry-After,
        asks for a pause (which the fleet takes): it says nothing of an outage. Nor does a
        failure at the token endpoint: the API was never asked."""
        if self.kind in ("credentials", "lost") or self.from_token:
            return ""
        if self.status is None:  # it never answered
            return "failure" if self.kind in ("retry", "unknown") else ""
        if self.throttled or self.status == 429:
            return ""
        if self.status == 503 and self.retry_after_s is not None:
            return ""
        return "failure" if self.status >= 500 else "ok"

    @property
    def summary(self) -> str:
        if self.kind == "placed":
            return f"conversation {self.conversation_id}"
        err = self.error
        if err is None:
            return self.kind
        status = f"{err.status} " if err.status else ""
        return f"{status}{err.code}: {err.message}"


class ApiErrorBody(BaseModel):
    """The platform's error body (api-contract.md's ErrorBody): message, code, status, contextId,
    messageParams, details, errors."""

    model_config = ConfigDict(extra="allow")
    message: str = ""
    status: int | None = None
    code: str = ""
    contextId: str | None = None
    messageParams: dict[str, Any] = {}
    details: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []


def classify_answer(answer: Answer, *, forbidden_hint: str, max_retry_after_s: float) -> Verdict:
    """forbidden_hint: the dialect's words for a 403 (the scope or permission to grant)."""
    status = answer.status
    if 200 <= status < 300:
        conversation_id = _conversation_id(answer)
        if conversation_id is None:
            return Verdict("unknown", error=_no_id(answer), status=status)
        return Verdict("placed", conversation_id=conversation_id, status=status)
    error = error_info(answer)
    if status == 401:
        return Verdict("reauth", error=error, status=status)
    if status == 403:
        hinted = error.model_copy(update={"message": f"{error.message}: {forbidden_hint}"})
        return Verdict("fail", error=hinted, status=status)
    if status in THROTTLED:
        waited, asked = retry_after(answer.headers.get("retry-after"), max_retry_after_s)
        return Verdict(
            "retry", retry_after_s=waited, retry_after_asked_s=asked, error=error, status=status
        )
    if status in BACKOFF or status >= 500:
        return Verdict("retry", error=error, status=status)
    # 400, 404, 409, 422 and any other 4xx: it never will
    return Verdict("fail", error=error, status=status)


# What went wrong, in our words: an exception's own text can carry a header (a token).
_TRANSPORT = {
    httpx.ConnectTimeout: "connecting timed out",
    httpx.ConnectError: "could not connect",
    httpx.PoolTimeout: "no free connection in time",
    httpx.ReadTimeout: "no answer in time",
    httpx.WriteTimeout: "sending timed out",
    httpx.RemoteProtocolError: "the server closed the connection or broke the protocol",
    httpx.LocalProtocolError: "the request could not be formed",
    httpx.UnsupportedProtocol: "the URL's scheme is not supported",
    httpx.InvalidURL: "the URL is not valid",
}


def describe_exception(exc: Exception) -> ErrorInfo:
    """A transport error as (code, message), never the exception's own text."""
    what = next((t for cls, t in _TRANSPORT.items() if isinstance(exc, cls)), "the request failed")
    return ErrorInfo(code=f"transport.{type(exc).__name__}", message=what)


def classify_exception(exc: httpx.HTTPError) -> Verdict:
    """Errors before the request left are retryable; errors after it may have acted: unknown."""
    info = describe_exception(exc)
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return Verdict("retry", error=info)
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError | httpx.InvalidURL):
        return Verdict("fail", error=info)
    return Verdict(
        "unknown",
        error=info.model_copy(
            update={
                "message": f"{info.message}: the request may have reached the platform, so it "
                "is not redialled; check the agent's call log, then 'followup retry ID' to "
                "dial again"
            }
        ),
    )


def error_info(answer: Answer) -> ErrorInfo:
    """The platform's error body, clipped and masked; or the start of whatever it sent."""
    try:
        body = ApiErrorBody.model_validate_json(answer.body)
    except ValidationError:
        return ErrorInfo(
            status=answer.status,
            code=f"http.{answer.status}",
            message=clip(mask_text(_start(answer.body)) or _reason(answer.status)),
        )
    context_id = body.contextId or answer.headers.get("inin-correlation-id")
    return ErrorInfo(
        status=answer.status,
        code=clip(mask_text(body.code), CODE_CHARS) or f"http.{answer.status}",
        message=clip(mask_text(body.message)) or _reason(answer.status),
        errors=_entries(body.errors),
        details=_entries(body.details),
        message_params={
            clip(str(k), CODE_CHARS): clip(mask_text(str(v)))
            for k, v in list(body.messageParams.items())[:MAX_ERRORS]
        },
        context_id=clip(mask_text(context_id), CODE_CHARS) if context_id else None,
    )


def _entries(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """errors[] or details[]: ten entries, each message and code clipped and masked."""
    kept = [
        {
            "message": clip(mask_text(str(e.get("message", "")))),
            "code": clip(mask_text(str(e.get("code") or e.get("errorCode") or "")), CODE_CHARS),
        }
        for e in entries[:MAX_ERRORS]
    ]
    if len(entries) > MAX_ERRORS:
        kept.append({"message": f"and {len(entries) - MAX_ERRORS} more", "code": ""})
    return kept


def retry_after(value: str | None, cap_s: float) -> tuple[float | None, float | None]:
    """Retry-After as delay-seconds or an HTTP-date (RFC 9110 §10.2.3): (the wait, capped at
    cap_s; what was asked). (None, None) if absent or not one of the two forms."""
    if not value:
        return None, None
    value = value.strip()
    if _DELAY_SECONDS.fullmatch(value):
        asked = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
            asked = max(0.0, when.timestamp() - time.time())
        except (TypeError, ValueError, IndexError, OverflowError):
            return None, None
    return min(asked, cap_s), asked


def clip(text: str | None, limit: int = MESSAGE_CHARS) -> str:
    if not text:
        return ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _conversation_id(answer: Answer) -> str | None:
    value = dig(answer_json(answer), "id")
    if isinstance(value, str) and 0 < len(value) <= 128 and value.isprintable():
        return value
    return None


def _no_id(answer: Answer) -> ErrorInfo:
    start = clip(mask_text(_start(answer.body)), 200)
    return ErrorInfo(
        status=answer.status,
        code="response.no_id",
        message=f"the platform answered {answer.status} without a conversation id, so the "
        f"call may or may not exist (a wrong FOLLOWUP_API_BASE_URL?); it is not redialled; "
        f"the answer began: {start or '(empty)'}",
    )


def _start(body: bytes) -> str:
    return body[:MESSAGE_CHARS].decode("utf-8", "replace").strip()


def _reason(status: int) -> str:
    return httpx.codes.get_reason_phrase(status) or f"HTTP {status}"
