"""Genesys Cloud (api-contract.md §2): a call on behalf of an agent, for a client-credentials
token, is POST /api/v2/conversations/calls/user/{userId} with a flat CreateCallRequest.

The request's metadata rides along as `attributes` (kept on the customer participant),
every value a string, with the request and contact ids. callerId, callerIdName and
callFromQueueId are sent only when configured. Nothing else: the platform refuses unknown
fields with 400.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from followup.tasks.request import FollowUpRequest

PERMISSIONS = ("conversation:call:add", "conversation:agentlessCall:add")


class GenesysDialect:
    name = "genesys"
    forbidden_hint = (
        f"the OAuth client's role lacks the permission this call needs (any of "
        f"{' or '.join(PERMISSIONS)}); add it to the role of the client named by "
        "FOLLOWUP_CLIENT_ID"
    )

    def __init__(
        self,
        *,
        caller_id: str | None = None,
        caller_id_name: str | None = None,
        queue_id: str | None = None,
    ) -> None:
        self._configured = {
            name: value
            for name, value in (
                ("callerId", caller_id),
                ("callerIdName", caller_id_name),
                ("callFromQueueId", queue_id),
            )
            if value
        }

    def call_path(self, request: FollowUpRequest) -> str:
        return f"/api/v2/conversations/calls/user/{quote(request.user_id, safe='')}"

    def call_body(self, request: FollowUpRequest, request_id: str) -> dict[str, Any]:
        attributes = {key: _text(value) for key, value in request.metadata.items()}
        attributes["followup_request_id"] = request_id
        attributes["followup_contact_id"] = request.contact_id
        return {"phoneNumber": request.phone_number, "attributes": attributes, **self._configured}


def _text(value: object) -> str:
    """Attributes are strings: true/false and numbers as JSON writes them, null as ''."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
