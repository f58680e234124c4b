"""The create-call request, as the platform builds it (`platforms`); sent once, never twice."""

from __future__ import annotations

import time
from dataclasses import replace

import httpx

from followup.config.redaction import url_host
from followup.tasks.request import FollowUpRequest
from followup.worker.classify import Verdict, classify_exception
from followup.worker.http import PlatformHttp
from followup.worker.platforms.base import CallRequest, Platform

CORRELATION_HEADER = "ININ-Correlation-Id"

LOST_CLAIM = Verdict("lost")  # the claim expired before sending: nothing sent, not ours now


class ContactCenterClient:
    """Sends one create-call request; never sends it twice (no transport retries)."""

    def __init__(self, http: PlatformHttp, platform: Platform) -> None:
        self._http = http
        self.platform = platform

    def prepare(self, request: FollowUpRequest, request_id: str) -> CallRequest:
        return self.platform.call_request(request, request_id)

    def post_call(self, call: CallRequest, base: str, token: str, request_id: str) -> Verdict:
        """base: the API's base for this token (Platform.api_base, asked before the marker)."""
        headers = {
            **self.platform.headers,
            "Authorization": f"Bearer {token}",
            CORRELATION_HEADER: request_id,
        }
        started = time.monotonic()
        try:
            answer = self._http.request(
                call.method,
                base + call.path,
                endpoint="call",
                params=call.params,
                json=call.json,
                headers=headers,
            )
        except httpx.HTTPError as exc:
            verdict = classify_exception(exc)
            if verdict.kind != "unknown" and verdict.error is not None:  # it never left
                where = f"{url_host(base)}: {verdict.error.message} (check FOLLOWUP_API_BASE_URL)"
                verdict = replace(
                    verdict, error=verdict.error.model_copy(update={"message": where})
                )
            return replace(verdict, seconds=time.monotonic() - started)
        verdict = self.platform.read_answer(answer)
        return replace(verdict, seconds=answer.seconds)
