"""The seed thread's contract (api-contract.md §1): a Personal Connection call, the agent as
a `user` participant in POST /api/v2/conversations/calls."""

from __future__ import annotations

from typing import Any

from followup.tasks.request import FollowUpRequest

CALLS_PATH = "/api/v2/conversations/calls"
REQUIRED_SCOPE = "conversation:write"


class ConversationsDialect:
    name = "conversations"
    forbidden_hint = (
        f"the token lacks the scope this call needs ({REQUIRED_SCOPE}); grant it to the OAuth "
        "client named by FOLLOWUP_CLIENT_ID"
    )

    def call_path(self, request: FollowUpRequest) -> str:
        return CALLS_PATH

    def call_body(self, request: FollowUpRequest, request_id: str) -> dict[str, Any]:
        """From the agent as a `user`, never a campaign `callType`."""
        return {
            "from": {"id": request.user_id, "address": request.user_id, "addressType": "user"},
            "to": [
                {"id": request.contact_id, "address": request.phone_number, "addressType": "phone"}
            ],
            "type": "outbound",
            "media": "audio",
        }
