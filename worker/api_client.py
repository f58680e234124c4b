"""The create-call request, in the configured dialect (`dialects`); sent once, never twice."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import httpx

from followup.config.redaction import url_host
from followup.tasks.request import FollowUpRequest
from followup.worker.classify import Verdict, classify_answer, classify_exception
from followup.worker.dialects import Dialect
from followup.worker.http import PlatformHttp

CORRELATION_HEADER = "ININ-Correlation-Id"

LOST_CLAIM = Verdict("lost")  # the claim expired before sending: nothing sent, not ours now


@dataclass(frozen=True)
class CallRequest:
    """A create-call request, built before the send marker is written."""

    url: str
    body: dict[str, Any]


class ContactCenterClient:
    """Sends one create-call request; never sends it twice (no transport retries)."""

    def __init__(
        self, http: PlatformHttp, api_base_url: str, dialect: Dialect, *, max_retry_after_s: float
    ) -> None:
        self._http = http
        self._base_url = api_base_url
        self.dialect = dialect
        self._max_retry_after_s = max_retry_after_s

    def prepare(self, request: FollowUpRequest, request_id: str) -> CallRequest:
        return CallRequest(
            self._base_url + self.dialect.call_path(request),
            self.dialect.call_body(request, request_id),
        )

    def post_call(self, call: CallRequest, token: str, request_id: str) -> Verdict:
        headers = {"Authorization": f"Bearer {token}", CORRELATION_HEADER: request_id}
        started = time.monotonic()
        try:
            answer = self._http.request(
                "POST", call.url, endpoint="call", json=call.body, headers=headers
            )
        except httpx.HTTPError as exc:
            verdict = classify_exception(exc)
            if verdict.kind != "unknown" and verdict.error is not None:  # it never left
                where = (
                    f"{url_host(call.url)}: {verdict.error.message} (check FOLLOWUP_API_BASE_URL)"
                )
                verdict = replace(
                    verdict, error=verdict.error.model_copy(update={"message": where})
                )
            return replace(verdict, seconds=time.monotonic() - started)
        verdict = classify_answer(
            answer,
            forbidden_hint=self.dialect.forbidden_hint,
            max_retry_after_s=self._max_retry_after_s,
        )
        return replace(verdict, seconds=answer.seconds)
