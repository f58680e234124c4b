"""The Celery tasks and the producer API that enqueues them."""

from tasks.producer import IdempotencyConflict, enqueue_follow_up, enqueue_many
from tasks.request import FollowUpRequest, InvalidRequest

__all__ = [
    "FollowUpRequest",
    "IdempotencyConflict",
    "InvalidRequest",
    "enqueue_follow_up",
    "enqueue_many",
]
