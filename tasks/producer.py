"""The producer API: validate, record `queued`, publish. Returns the request id.

The record (with its idempotency key) is written before the message. If publishing fails
after that, the request is not lost: the sweeper publishes any `queued` request that no
worker claimed within FOLLOWUP_REDELIVER_AFTER_S.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import structlog

from tasks.publish import publish
from tasks.request import FieldError, FollowUpRequest, InvalidRequest, parse_request

log = structlog.get_logger(__name__)


class IdempotencyConflict(InvalidRequest):
    """The idempotency key was already used for a request with different content.

    In a batch, every other request is still enqueued; their ids are in `enqueued`.
    """

    def __init__(self, key: str, first_request_id: str, enqueued: list[str] | None = None) -> None:
        self.first_request_id = first_request_id
        self.enqueued = enqueued or []  # the rest of a batch, recorded and published
        super().__init__(
            [
                FieldError(
                    field="idempotency_key",
                    message=f"'{key}' was already used by request {first_request_id} with "
                    "different content; use a new key for a different follow-up",
                )
            ]
        )


def enqueue_follow_up(
    request: FollowUpRequest | Mapping[str, Any] | None = None,
    *,
    queue: str | None = None,
    **fields: Any,
) -> str:
    """Enqueue one follow-up call; returns its request id.

    Give a FollowUpRequest, a dict, or the fields as keywords. The same idempotency_key
    again returns the first request's id and queues nothing. Raises InvalidRequest (naming
    the field) for a bad request, IdempotencyConflict for a reused key with new content.

    Examples:
        >>> enqueue_follow_up(contact_id="c-1", user_id="u-67890",
        ...                   phone_number="+61298765432", idempotency_key="crm-123")
        '5f0c...'
    """
    data = request if request is not None else fields
    return enqueue_many([data], queue=queue)[0]


def _parse_all(requests: list[FollowUpRequest | Mapping[str, Any]]) -> list[FollowUpRequest]:
    """Validate every request; in a batch, each error names its request: requests[3].user_id."""
    parsed, errors = [], []
    for n, raw in enumerate(requests):
        try:
            parsed.append(parse_request(dict(raw) if isinstance(raw, Mapping) else raw))
        except InvalidRequest as exc:
            prefix = f"requests[{n}]." if len(requests) > 1 else ""
            errors += [FieldError(field=prefix + e.field, message=e.message) for e in exc.errors]
    if errors:
        raise InvalidRequest(errors)
    return parsed


def enqueue_many(
    requests: Iterable[FollowUpRequest | Mapping[str, Any]], *, queue: str | None = None
) -> list[str]:
    """Enqueue a batch: all are validated first (one invalid request enqueues none), then
    recorded in one Redis round trip and published over one broker connection."""
    from worker.celery_app import app
    from worker.runtime import get_runtime

    runtime = get_runtime()
    queue = queue or runtime.settings.queue
    parsed = _parse_all(list(requests))
    ids = [uuid.uuid4().hex for _ in parsed]

    pipe = runtime.redis.pipeline(transaction=False)
    for request_id, req in zip(ids, parsed, strict=True):
        runtime.store.register(request_id, req, queue=queue, source="producer", pipe=pipe)
    results = [runtime.store.registered(raw) for raw in pipe.execute()]

    to_publish = [
        (request_id, req)
        for request_id, req, result in zip(ids, parsed, results, strict=True)
        if result.outcome == "created"
    ]
    try:
        with app.producer_or_acquire() as producer:
            for request_id, req in to_publish:
                publish(request_id, req.model_dump(mode="json"), queue, producer=producer)
    except Exception:
        log.warning(
            "publish failed; the sweeper will publish the recorded requests",
            count=len(to_publish),
            exc_info=True,
        )
    for request_id, _ in to_publish:
        log.info("transition", request_id=request_id, state="queued", attempt=0)

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
            )
    return [
        result.request_id if result.outcome == "duplicate" else request_id
        for request_id, result in zip(ids, results, strict=True)
    ]
