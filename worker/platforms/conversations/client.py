"""The seed thread's contract (api-contract.md §1): a Personal Connection call, the agent as
a `user` participant in POST /api/v2/conversations/calls, for a client-credentials token.
It cannot say whether an agent is busy or whether a call happened."""

from __future__ import annotations

from typing import Any

from followup.config.settings import Settings
from followup.tasks.request import FollowUpRequest
from followup.worker.classify import Verdict, classify_answer
from followup.worker.http import Answer, PlatformHttp
from followup.worker.platforms.base import CallRequest, NotSupported, TokenRequest
from followup.worker.platforms.conversations.profile import PROFILE

CALLS_PATH = "/api/v2/conversations/calls"
REQUIRED_SCOPE = "conversation:write"
CHECK_CREDENTIALS = "FOLLOWUP_CLIENT_ID, FOLLOWUP_CLIENT_SECRET and FOLLOWUP_TOKEN_URL"


def client_credentials(settings: Settings) -> TokenRequest:
    """An OAuth 2.0 client-credentials grant, the client as HTTP Basic (§1, §2)."""
    client_id, secret = settings.require_credentials()
    return TokenRequest(
        settings.effective_token_url,
        {"grant_type": "client_credentials"},
        (client_id, secret),
        identity=client_id,
        check=CHECK_CREDENTIALS,
    )


class ConversationsPlatform:
    name = "conversations"
    reconcile_by_default = PROFILE.reconcile_by_default
    match_window_s = None
    check_busy_by_default = PROFILE.check_busy_by_default
    forbidden_hint = (
        f"the token lacks the scope this call needs ({REQUIRED_SCOPE}); grant it to the OAuth "
        "client named by FOLLOWUP_CLIENT_ID"
    )

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.headers: dict[str, str] = {}

    def token_request(self) -> TokenRequest:
        return client_credentials(self._settings)

    def api_base(self, token: str) -> str:
        return self._settings.effective_api_base_url

    def call_request(self, request: FollowUpRequest, request_id: str) -> CallRequest:
        """From the agent as a `user`, never a campaign `callType`."""
        body: dict[str, Any] = {
            "from": {"id": request.user_id, "address": request.user_id, "addressType": "user"},
            "to": [
                {"id": request.contact_id, "address": request.phone_number, "addressType": "phone"}
            ],
            "type": "outbound",
            "media": "audio",
        }
        return CallRequest("POST", CALLS_PATH, json=body)

    def read_answer(self, answer: Answer) -> Verdict:
        return classify_answer(
            answer,
            forbidden_hint=self.forbidden_hint,
            max_retry_after_s=self._settings.max_retry_after_s,
        )

    def agent_busy(self, base: str, user_id: str, token: str) -> bool | None:
        raise NotSupported("the conversations contract has no availability")

    def find_call(
        self, base: str, request_id: str, user_id: str, number: str, sent_at: float, token: str
    ) -> str | None:
        raise NotSupported("the conversations contract has no call search")


def build(settings: Settings, http: PlatformHttp) -> ConversationsPlatform:
    return ConversationsPlatform(settings)
