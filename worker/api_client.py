"""The contact-center API's create-call request (api-contract.md §1, "conversations")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from followup.tasks.request import FollowUpRequest
from followup.worker.classify import Verdict, classify_exception, classify_response
from followup.worker.tokens import TokenCache, TokenError

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
    """Places one call per attempt; never sends the POST twice for one send marker.

    `before_send` is called just before each POST leaves and must return True (the send
    marker was written under a live claim), or nothing is sent.
    """

    def __init__(self, http: httpx.Client, api_base_url: str, tokens: TokenCache) -> None:
        self._http = http
        self._url = api_base_url + CALLS_PATH
        self._tokens = tokens

    def place_call(
        self, request: FollowUpRequest, request_id: str, before_send: Callable[[], bool]
    ) -> Verdict:
        body = build_call_body(request)
        for _ in range(2):  # a 401 means the platform did nothing: new token, once more
            try:
                token = self._tokens.get()
            except TokenError as exc:
                return exc.verdict
            if not before_send():
                return LOST_CLAIM
            verdict = self._post(body, token, request_id)
            if verdict.kind != "reauth":
                return verdict
            self._tokens.invalidate(token)
        assert verdict.error is not None
        return Verdict(
            "fail",
            error=verdict.error.model_copy(
                update={
                    "message": f"{verdict.error.message}: refused twice, with a fresh "
                    "token too; check the OAuth client's grants"
                }
            ),
        )

    def _post(self, body: dict[str, Any], token: str, request_id: str) -> Verdict:
        headers = {"Authorization": f"Bearer {token}", CORRELATION_HEADER: request_id}
        try:
            response = self._http.post(self._url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            return classify_exception(exc)
        return classify_response(response)
