"""The platform's dialect: which path and body a create-call request takes, and which
permission a 403 needs. Both dialects answer alike (the conversation's `id`; the ErrorBody),
which `classify` reads. Everything else (claim, marker, retries, pacing, status, masking)
is the same for every dialect.

Each dialect is one small module: `conversations_dialect` (the seed's contract,
api-contract.md §1) and `genesys_dialect` (Genesys Cloud, §2).
"""

from __future__ import annotations

from typing import Any, Protocol

from followup.config.settings import Settings
from followup.tasks.request import FollowUpRequest
from followup.worker.conversations_dialect import ConversationsDialect
from followup.worker.genesys_dialect import GenesysDialect


class Dialect(Protocol):
    name: str
    forbidden_hint: str  # what a 403 means: the scope or permission the OAuth client lacks

    def call_path(self, request: FollowUpRequest) -> str:
        """The create-call path, below the API's base URL."""

    def call_body(self, request: FollowUpRequest, request_id: str) -> dict[str, Any]:
        """The create-call body."""


def dialect_for(settings: Settings) -> Dialect:
    if settings.api_dialect == "genesys":
        return GenesysDialect(
            caller_id=settings.genesys_caller_id,
            caller_id_name=settings.genesys_caller_id_name,
            queue_id=settings.genesys_queue_id,
        )
    return ConversationsDialect()
