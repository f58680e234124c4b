"""What the status store holds and returns: the states, the last error, a request's record.

The states and the sets that group them are defined here once; the Lua scripts
(`followup.worker.store_lua`) are built from them.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, computed_field


class State(StrEnum):
    QUEUED = "queued"
    SCHEDULED = "scheduled"
    DIALING = "dialing"
    RETRYING = "retrying"
    PLACED = "placed"
    FAILED = "failed"
    UNKNOWN = "unknown"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


STATES: tuple[State, ...] = tuple(State)
TERMINAL_STATES = frozenset(
    {State.PLACED, State.FAILED, State.UNKNOWN, State.CANCELLED, State.REJECTED}
)
# Waiting for a due time; the only states a person may cancel (nothing has been sent).
WAITING_STATES = frozenset({State.QUEUED, State.SCHEDULED, State.RETRYING})
# A person may dial these again (`followup retry`).
RETRYABLE_STATES = frozenset({State.UNKNOWN, State.FAILED})


def _either(states: frozenset[State]) -> str:
    names = [s.value for s in STATES if s in states]
    return ", ".join(names[:-1]) + " or " + names[-1]


CANCEL_RULE = f"it can be cancelled only while {_either(WAITING_STATES)}"
RETRY_RULE = f"it can be retried only when {_either(RETRYABLE_STATES)}"


class ErrorInfo(BaseModel):
    """The last error: the API's error body, or our own in the same shape."""

    status: int | None = None
    code: str
    message: str
    errors: list[dict[str, Any]] = []
    details: list[dict[str, Any]] = []
    message_params: dict[str, str] = {}
    context_id: str | None = None  # the platform's id for this error, for its support team


UNKNOWN_OUTCOME = ErrorInfo(
    code="outcome.unknown",
    message="the worker was lost after the call was sent, so it may have been placed; check "
    "the agent's call log, then 'followup retry ID' to dial again",
)


class HistoryEntry(BaseModel):
    at: datetime
    event: str
    state: str
    attempt: int
    detail: str | None = None
    # Only on the one 'entries left out' entry of a long history (see store_lua.note):
    # how many entries it stands for, and the first one's time (`at` is the last one's).
    count: int | None = None
    since: datetime | None = None
    times: int = 1  # the same event again and again (copies of one message): counted here
    last_at: datetime | None = None  # when it was last counted


class StatusRecord(BaseModel):
    """What a person or a service reads about one request (phone number masked)."""

    request_id: str
    state: State
    attempts: int
    contact_id: str | None = None
    user_id: str | None = None
    phone_number: str | None = None
    idempotency_key: str | None = None
    queue: str | None = None
    conversation_id: str | None = None
    last_error: ErrorInfo | None = None
    next_attempt_at: datetime | None = None
    waiting_for: str | None = None  # while it waits: api_pause, retry_backoff, credentials ...
    customer_timezone: str | None = None  # the zone its calling hours were judged in
    created_at: datetime
    updated_at: datetime
    history: list[HistoryEntry] = []

    @computed_field  # type: ignore[prop-decorator]
    @property
    def next_attempt_local(self) -> datetime | None:
        """next_attempt_at in the customer's own time, when calling hours were judged."""
        if self.next_attempt_at is None or self.customer_timezone is None:
            return None
        return self.next_attempt_at.astimezone(ZoneInfo(self.customer_timezone))
