"""An OAuth 2.0 client-credentials token, fetched once and shared by all worker threads."""

from __future__ import annotations

import threading
import time

import httpx
import structlog

from followup.worker.classify import Verdict, classify_exception, error_info
from followup.worker.records import ErrorInfo

log = structlog.get_logger(__name__)


class TokenError(Exception):
    """No token could be had; `verdict` says whether to retry (transient) or fail."""

    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict
        super().__init__(verdict.summary)


class TokenCache:
    """Caches the bearer token until shortly before it expires.

    One lock: while one thread fetches, the others wait for its token rather than each
    fetching their own. The token and the secret are never logged.
    """

    def __init__(
        self,
        http: httpx.Client,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        timeout_s: float,
    ) -> None:
        self._http = http
        self._url = token_url
        self._auth = (client_id, client_secret)
        self._timeout = timeout_s
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0

    def get(self) -> str:
        with self._lock:
            if self._token is None or time.monotonic() >= self._expires_at:
                self._token, self._expires_at = self._fetch()
            return self._token

    def invalidate(self, token: str) -> None:
        """Drop the token after a 401, unless another thread already replaced it."""
        with self._lock:
            if self._token == token:
                self._token = None

    def _fetch(self) -> tuple[str, float]:
        started = time.monotonic()
        try:
            response = self._http.post(
                self._url,
                data={"grant_type": "client_credentials"},
                auth=self._auth,
                timeout=self._timeout,
            )
        except httpx.HTTPError as exc:
            verdict = classify_exception(exc)
            # Fetching a token changes nothing at the platform: any transport error may retry.
            raise TokenError(
                Verdict("retry" if verdict.kind == "unknown" else verdict.kind, error=verdict.error)
            ) from None
        if response.status_code in (400, 401, 403):
            info = error_info(response)
            raise TokenError(
                Verdict(
                    "fail",
                    error=info.model_copy(
                        update={
                            "message": (
                                "the token endpoint refused the client credentials "
                                f"({info.message}): check FOLLOWUP_CLIENT_ID, "
                                "FOLLOWUP_CLIENT_SECRET and FOLLOWUP_TOKEN_URL"
                            )
                        }
                    ),
                )
            )
        if response.status_code != 200:
            raise TokenError(Verdict("retry", error=error_info(response)))
        try:
            body = response.json()
            token = str(body["access_token"])
            lifetime = float(body.get("expires_in", 3600))
        except (ValueError, KeyError, TypeError):
            raise TokenError(
                Verdict(
                    "retry",
                    error=ErrorInfo(
                        status=200,
                        code="token.malformed",
                        message="the token endpoint answered 200 without an access_token",
                    ),
                )
            ) from None
        margin = min(60.0, lifetime / 10)
        log.info("token fetched", expires_in_s=lifetime)
        return token, started + lifetime - margin
