"""An OAuth 2.0 token, fetched once and shared by all worker threads, by the grant the
platform gives (`platforms.base.TokenRequest`: client credentials, or a password grant).

- One fetch at a time. A failure is kept for a moment and given to every thread that was
  waiting for it, so a hanging or failing token endpoint costs one timeout, not one a thread.
- The token endpoint's Retry-After is honoured (capped like the API's).
- A refusal of the credentials (invalid_client, or any 400/401/403) is its own verdict,
  "credentials": no request can fix it. It is this worker's state (a half-done rotation
  leaves other workers with working credentials: the pipeline hands requests to them), and
  this process does not ask again for CREDENTIALS_RECHECK_S.
- The token is checked (non-empty printable ASCII, no spaces) before anything uses it, so it
  can never break, or be echoed by, a request header. Neither it nor the secret is logged.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

import httpx
import structlog

from followup.config.redaction import mask_text, url_host
from followup.worker.classify import (
    Verdict,
    clip,
    describe_exception,
    error_info,
    retry_after,
)
from followup.worker.http import Answer, PlatformHttp, answer_json, dig
from followup.worker.platforms.base import TokenRequest
from followup.worker.records import ErrorInfo

log = structlog.get_logger(__name__)

FAILURE_HOLD_S = 1.0  # how long a transient failure is shared with threads asking for a token
CREDENTIALS_RECHECK_S = 60.0  # how long a refusal holds before the credentials are tried again
TOKEN_CHARS = 4096


class TokenError(Exception):
    """No token could be had; `verdict` says why: retry (transient) or credentials."""

    def __init__(self, verdict: Verdict, hold_s: float) -> None:
        self.verdict = dataclasses.replace(verdict, from_token=True)  # not the breaker's
        self.hold_s = hold_s
        super().__init__(verdict.summary)


class TokenCache:
    """Caches the bearer token until shortly before it expires."""

    def __init__(
        self,
        http: PlatformHttp,
        grant: TokenRequest,
        *,
        max_retry_after_s: float,
        on_granted: Callable[[float], None] = lambda _: None,
        on_fetched: Callable[[str], None] = lambda _: None,
    ) -> None:
        self._http = http
        self._grant = grant
        self._max_retry_after_s = max_retry_after_s
        self._on_granted = on_granted  # with the token's seconds left
        self._on_fetched = on_fetched  # once a fetch: 'granted', 'refused' or 'failed'
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self._failure: TokenError | None = None
        self._failure_until = 0.0
        self._accepted = False  # the last verdict on the credentials: a token was granted

    def get(self) -> str:
        """The token; raises TokenError (the same one, for a while, to every thread)."""
        with self._lock:
            now = time.monotonic()
            if self._token is not None and now < self._expires_at:
                return self._token
            if self._failure is not None and now < self._failure_until:
                raise self._failure
            try:
                token, self._expires_at = self._fetch()
            except TokenError as exc:
                self._failure, self._failure_until = exc, time.monotonic() + exc.hold_s
                if exc.verdict.kind == "credentials":
                    self._accepted = False
                self._on_fetched("refused" if exc.verdict.kind == "credentials" else "failed")
                raise
            self._token, self._failure, self._accepted = token, None, True
        self._on_fetched("granted")
        self._on_granted(self.seconds_left())
        return token  # not self._token: another thread may have invalidated it meanwhile

    @property
    def credentials_accepted(self) -> bool:
        """A token was granted, and the credentials were not refused since (the token
        itself may have expired: an idle worker's credentials still work)."""
        return self._accepted

    def seconds_left(self) -> float:
        """How long the cached token is still good for (0: none)."""
        return max(0.0, self._expires_at - time.monotonic()) if self._token is not None else 0.0

    def invalidate(self, token: str) -> None:
        """Drop the token after a 401, unless another thread already replaced it."""
        with self._lock:
            if self._token == token:
                self._token = None

    def _fetch(self) -> tuple[str, float]:
        started = time.monotonic()
        try:
            answer = self._http.request(
                "POST",
                self._grant.url,
                endpoint="token",
                data=self._grant.form,
                auth=self._grant.auth,
            )
        except httpx.HTTPError as exc:
            # Fetching a token changes nothing at the platform: any transport error may retry.
            info = describe_exception(exc)
            raise TokenError(
                Verdict(
                    "retry",
                    error=info.model_copy(update={"message": _at_endpoint(info, self._grant.url)}),
                ),
                FAILURE_HOLD_S,
            ) from None
        if answer.status in (400, 401, 403):
            refusal = _refusal(answer, self._grant.check)
            log.error(
                "the platform refused the OAuth client credentials: this worker dials nothing "
                "until they are accepted (checked again every minute); workers whose "
                "credentials work go on",
                detail=refusal.message,
                pause_s=CREDENTIALS_RECHECK_S,
            )
            raise TokenError(Verdict("credentials", error=refusal), CREDENTIALS_RECHECK_S)
        if answer.status != 200:
            info = error_info(answer)
            waited, asked = retry_after(answer.headers.get("retry-after"), self._max_retry_after_s)
            verdict = Verdict(
                "retry",
                retry_after_s=waited,
                retry_after_asked_s=asked,
                error=info.model_copy(update={"message": _at_endpoint(info, self._grant.url)}),
            )  # no status: the call itself was never sent, so nothing is said of the API
            raise TokenError(verdict, waited or FAILURE_HOLD_S)
        token, lifetime = _read_token(answer)
        margin = min(60.0, lifetime / 10)
        log.info("token fetched", expires_in_s=lifetime)
        return token, started + lifetime - margin


def _read_token(answer: Answer) -> tuple[str, float]:
    body = answer_json(answer)
    token = dig(body, "access_token")
    lifetime = body.get("expires_in", 3600) if isinstance(body, dict) else 0
    valid = (
        isinstance(token, str)
        and 0 < len(token) <= TOKEN_CHARS
        and token.isascii()
        and token.isprintable()
        and " " not in token
    )
    if not valid or not isinstance(lifetime, int | float) or not lifetime > 0:
        raise TokenError(
            Verdict(
                "retry",
                error=ErrorInfo(
                    status=200,
                    code="token.malformed",
                    message="the token endpoint answered 200 without a usable access_token "
                    "(a non-empty printable ASCII string) and expires_in",
                ),
            ),
            FAILURE_HOLD_S,
        )
    assert isinstance(token, str)
    return token, float(min(lifetime, 86400 * 7))


def _refusal(answer: Answer, check: str) -> ErrorInfo:
    """The OAuth error (RFC 6749 §5.2: error, error_description), clipped and masked."""
    body = answer_json(answer)
    error, description = dig(body, "error"), dig(body, "error_description")
    error = clip(
        mask_text(error if isinstance(error, str) and error else f"http.{answer.status}"), 80
    )
    description = clip(mask_text(description if isinstance(description, str) else ""), 200)
    return ErrorInfo(
        status=answer.status,
        code=f"token.{error}",
        message=f"the token endpoint refused the client credentials ({error}"
        + (f": {description}" if description else "")
        + f"): check {check}",
    )


def _at_endpoint(info: ErrorInfo, url: str) -> str:
    """Where it went wrong, and the setting that says where: a wrong address is the usual
    cause of a token endpoint that cannot be reached."""
    return (
        f"the token endpoint {url_host(url)}: {info.message} (check FOLLOWUP_TOKEN_URL; "
        "by default FOLLOWUP_API_BASE_URL + /oauth/token)"
    )
