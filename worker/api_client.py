"""The contact-center API's create-call request (api-contract.md §1, "conversations")."""

from __future__ import annotations

from typing import Any

import httpx

from followup.tasks.request import FollowUpRequest
from followup.worker.classify import Verdict, classify_answer, classify_exception
from followup.worker.http import PlatformHttp

CALLS_PATH = "/api/v2/conversations/calls"
CORRELATION_HEADER = "ININ-Correlation-Id"

LOST_CLAIM = Verdict("lost")  # the claim expired before sending: nothing sent, not ours now


def build_call_body(request: FollowUpRequest) -> dict[str, Any]:
    """A Personal Connection call: from the agent as a `user`, never a campaign `callType`."""
    return {
        "from": {"id": request.user_id, "address": request.user_id, "addressType": "user"},
        "to": [{"id": request.contact_id, "address": request.phone_number, "addressType": "phone"}],
        "type": "outbound",
        "media": "audio",
    }


class ContactCenterClient:
    """Sends one create-call request; never sends it twice (no transport retries)."""

    def __init__(self, http: PlatformHttp, api_base_url: str, *, max_retry_after_s: float) -> None:
        self._http = http
        self._url = api_base_url + CALLS_PATH
        self._max_retry_after_s = max_retry_after_s

    def post_call(self, body: dict[str, Any], token: str, request_id: str) -> Verdict:
        headers = {"Authorization": f"Bearer {token}", CORRELATION_HEADER: request_id}
        try:
            answer = self._http.request("POST", self._url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            return classify_exception(exc)
        return classify_answer(answer, max_retry_after_s=self._max_retry_after_s)
