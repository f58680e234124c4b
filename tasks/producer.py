"""The producer API: validate, record `queued`, publish. Returns the request id.

It loads no worker code: the status store and a Celery app of its own that is never made
current. Nothing here configures logging or exits the process; a bad setting raises
ConfigError, naming the variable.

When the broker is the status store's Redis (the default), one Lua script writes the record
and pushes the message (tasks/publish.py builds it as kombu would). Otherwise the record (with
its idempotency key) is written before the message; if publishing fails after that, the
request is not lost: the sweeper publishes any `queued` request that no worker claimed within
FOLLOWUP_REDELIVER_AFTER_S.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import structlog

from followup.config.celery import create_app
from followup.config.redaction import url_host
from followup.config.settings import Settings, load_settings, queue_problem
from followup.tasks.publish import RedisMessages, publish
from followup.tasks.request import (
    FieldError,
    FollowUpRequest,
    InvalidRequest,
    checked_request,
    key_conflict,
)
from followup.worker.records import StatusRecord
from followup.worker.store import StatusStore

log = structlog.get_logger(__name__)

Requestish = FollowUpRequest | Mapping[str, Any]


class IdempotencyConflict(InvalidRequest):
    """The idempotency key was already used for a request with different content.

    In a batch, every other request is still enqueued; their ids are in `enqueued`, and
    their places in the batch (from 0) in `enqueued_at`.
    """

    def __init__(
        self,
        key: str,
        first_request_id: str,
        enqueued: list[str] | None = None,
        enqueued_at: list[int] | None = None,
    ) -> None:
        self.key = key
        self.first_request_id = first_request_id
        self.enqueued = enqueued or []  # the rest of a batch, recorded and published
        self.enqueued_at = enqueued_at or []
        super().__init__([key_conflict(key, first_request_id)])


class FollowUpClient:
    """The producer API bound to one Settings: one Redis pool, one broker connection pool.

    Examples:
        >>> client = FollowUpClient(Settings(redis_url="redis://redis.internal:6379/0"))
        >>> client.enqueue(contact_id="c-1", user_id="u-67890", phone_number="+61298765432")
        '5f0c...'
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings()
        self.store = StatusStore.from_settings(self.settings)
        self.app = create_app(self.settings)
        # When the broker is the status store's Redis (the default), the record and the
        # message are written by one Lua script; otherwise the message goes through Celery.
        self.inline = (
            RedisMessages(self.app, self.store.redis.connection_pool.connection_kwargs["db"])
            if self.settings.effective_broker_url == self.settings.redis_url
            and not self.settings.broker_is_rabbitmq
            else None
        )

    def enqueue(
        self, request: Requestish | None = None, *, queue: str | None = None, **fields: Any
    ) -> str:
        """Enqueue one follow-up call; see `enqueue_follow_up`."""
        return self.enqueue_many([request if request is not None else fields], queue=queue)[0]

    def enqueue_many(
        self,
        requests: Iterable[Requestish],
        *,
        queue: str | None = None,
        checked_at: datetime | None = None,
    ) -> list[str]:
        """Enqueue a batch: all are validated first (one invalid request enqueues none), then
        recorded (and, when the broker is the store's Redis, published) in one round trip.
        checked_at: the moment their times are judged at (default now), for a caller that
        checked a larger whole first (`followup enqueue --file`)."""
        queue = queue or self.settings.queue
        problem = queue_problem(queue)
        if problem:
            raise InvalidRequest([FieldError(field="queue", message=problem)])
        parsed = _parse_all(
            list(requests), self.settings.api_dialect, checked_at or datetime.now(UTC)
        )
        ids = [uuid.uuid4().hex for _ in parsed]

        batch = [
            (
                request_id,
                req,
                self.inline.build(request_id, req.model_dump(mode="json"), queue)
                if self.inline
                else None,
            )
            for request_id, req in zip(ids, parsed, strict=True)
        ]
        if len(batch) == 1:  # one EVALSHA: a pipeline would check its scripts first
            request_id, req, message = batch[0]
            results = [
                self.store.register(
                    request_id, req, queue=queue, source="producer", message=message
                )
            ]
        else:
            results = self.store.register_many(batch, queue=queue, source="producer")
        if not self.inline:
            self._publish(
                [
                    (request_id, req)
                    for request_id, req, result in zip(ids, parsed, results, strict=True)
                    if result.outcome == "created"
                ],
                queue,
            )

        # Conflicts are raised only now: the rest of the batch is recorded and published.
        for req, result in zip(parsed, results, strict=True):
            if result.outcome == "conflict":
                raise IdempotencyConflict(
                    req.idempotency_key or "",
                    result.request_id,
                    enqueued=[
                        r.request_id if r.outcome == "duplicate" else i
                        for i, r in zip(ids, results, strict=True)
                        if r.outcome != "conflict"
                    ],
                    enqueued_at=[n for n, r in enumerate(results) if r.outcome != "conflict"],
                )
        return [
            result.request_id if result.outcome == "duplicate" else request_id
            for request_id, result in zip(ids, results, strict=True)
        ]

    def _publish(self, recorded: list[tuple[str, FollowUpRequest]], queue: str) -> None:
        """Publish recorded requests through Celery, over one broker connection."""
        try:
            with self.app.producer_or_acquire() as producer:
                for request_id, req in recorded:
                    publish(
                        self.app, request_id, req.model_dump(mode="json"), queue, producer=producer
                    )
        except Exception as exc:  # any broker error: the records are what matters
            # One line, no traceback: nothing is lost, and the operator learns what to check.
            log.warning(
                f"the broker at {url_host(self.settings.effective_broker_url)} "
                f"(FOLLOWUP_BROKER_URL) did not take the message ({type(exc).__name__}); "
                "the request is recorded (queued) and the sweeper will publish it when the "
                "broker answers",
                count=len(recorded),
            )

    def status(self, request_id: str) -> StatusRecord | None:
        """One request's record and history (phone number masked); None if there is none."""
        return self.store.get(request_id)

    def close(self) -> None:
        self.store.redis.close()
        self.app.close()


def _parse_all(requests: list[Requestish], dialect: str, now: datetime) -> list[FollowUpRequest]:
    """Validate every request; in a batch, each error names its request: requests[3].user_id."""
    parsed, errors = [], []
    for n, raw in enumerate(requests):
        try:
            parsed.append(
                checked_request(dict(raw) if isinstance(raw, Mapping) else raw, dialect, now)
            )
        except InvalidRequest as exc:
            prefix = f"requests[{n}]." if len(requests) > 1 else ""
            errors += [FieldError(field=prefix + e.field, message=e.message) for e in exc.errors]
    if errors:
        raise InvalidRequest(errors)
    return parsed


_default: FollowUpClient | None = None
_default_lock = threading.Lock()


def default_client() -> FollowUpClient:
    """The process's client, built on first use from the FOLLOWUP_* environment."""
    global _default
    with _default_lock:
        if _default is None:
            _default = FollowUpClient()
        return _default


def enqueue_follow_up(
    request: Requestish | None = None, *, queue: str | None = None, **fields: Any
) -> str:
    """Enqueue one follow-up call; returns its request id.

    Give a FollowUpRequest, a dict, or the fields as keywords. The same idempotency_key
    again returns the first request's id and queues nothing. Raises InvalidRequest (naming
    the field) for a bad request, IdempotencyConflict for a reused key with new content,
    ConfigError (naming the variable) for a bad FOLLOWUP_* setting.

    Examples:
        >>> enqueue_follow_up(contact_id="c-1", user_id="u-67890",
        ...                   phone_number="+61298765432", idempotency_key="crm-123")
        '5f0c...'
    """
    return default_client().enqueue(request, queue=queue, **fields)


def enqueue_many(requests: Iterable[Requestish], *, queue: str | None = None) -> list[str]:
    """Enqueue a batch; see FollowUpClient.enqueue_many."""
    return default_client().enqueue_many(requests, queue=queue)


def get_status(request_id: str) -> StatusRecord | None:
    """One request's status record (state, attempts, conversation id, last error, history)."""
    return default_client().status(request_id)
