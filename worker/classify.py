"""What one attempt's answer means (api-contract.md §3), as a pure function.

The one rule that matters most: anything that may have reached the platform after the body
left is `unknown`, never `retry`: a second create-call POST can call a customer twice.
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from followup.config.redaction import mask_text
from followup.worker.records import ErrorInfo

Kind = Literal["placed", "retry", "fail", "reauth", "unknown", "lost"]
PERMANENT = {400, 404, 409, 422}
BACKOFF = {500, 502, 504}
THROTTLED = {429, 503}
REQUIRED_SCOPE = "conversation:write"


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    conversation_id: str | None = None
    retry_after_s: float | None = None
    error: ErrorInfo | None = None

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
    """The platform's error body: {message, status, code, contextId, details, errors}."""

    model_config = ConfigDict(extra="allow")
    message: str = ""
    status: int | None = None
    code: str = ""
    contextId: str | None = None
    errors: list[dict[str, Any]] = []


def classify_response(response: httpx.Response) -> Verdict:
    status = response.status_code
    if 200 <= status < 300:
        return Verdict("placed", conversation_id=_conversation_id(response))
    error = error_info(response)
    if status == 401:
        return Verdict("reauth", error=error)
    if status == 403:
        hint = (
            f"the token lacks the scope or permission this call needs ({REQUIRED_SCOPE}); "
            "grant it to the OAuth client named by FOLLOWUP_CLIENT_ID"
        )
        return Verdict(
            "fail", error=error.model_copy(update={"message": f"{error.message}: {hint}"})
        )
    if status in THROTTLED:
        return Verdict("retry", retry_after_s=retry_after(response), error=error)
    if status in BACKOFF or status >= 500:
        return Verdict("retry", error=error)
    return Verdict("fail", error=error)  # 400, 404, 409, 422 and any other 4xx: it never will


def classify_exception(exc: httpx.HTTPError) -> Verdict:
    """Errors before the request left are retryable; errors after it may have acted: unknown."""
    name = type(exc).__name__
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return Verdict("retry", error=ErrorInfo(code=f"transport.{name}", message=_safe(exc)))
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError | httpx.InvalidURL):
        return Verdict("fail", error=ErrorInfo(code=f"transport.{name}", message=_safe(exc)))
    return Verdict(
        "unknown",
        error=ErrorInfo(
            code=f"transport.{name}",
            message=f"{_safe(exc)}: the request may have reached the platform, so it is not "
            "redialled; check the agent's call log, then 'followup retry ID' to dial again",
        ),
    )


def error_info(response: httpx.Response) -> ErrorInfo:
    try:
        body = ApiErrorBody.model_validate_json(response.content)
    except ValidationError:
        text = response.text[:300].strip() or response.reason_phrase
        return ErrorInfo(
            status=response.status_code,
            code=f"http.{response.status_code}",
            message=mask_text(text),
        )
    return ErrorInfo(
        status=response.status_code,
        code=body.code or f"http.{response.status_code}",
        message=mask_text(body.message or response.reason_phrase),
        errors=[
            {"message": mask_text(str(e.get("message", ""))), "code": str(e.get("code", ""))}
            for e in body.errors
        ],
        context_id=body.contextId,
    )


def retry_after(response: httpx.Response) -> float | None:
    """Retry-After as delay-seconds or an HTTP-date (RFC 9110 §10.2.3); None if absent/bad."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _conversation_id(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    value = body.get("id") if isinstance(body, dict) else None
    return str(value) if value else None


def _safe(exc: Exception) -> str:
    return mask_text(str(exc) or type(exc).__name__)
