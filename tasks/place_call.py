"""The Celery task `followup.place_call`: a thin shell around `followup.worker.pipeline`.

Any service can publish it without importing this project:

    celery.send_task("followup.place_call", queue="followup",
                     kwargs={"request": {"contact_id": "c-12345", "user_id": "u-67890",
                                         "phone_number": "+61298765432"}})
"""

from __future__ import annotations

import time
from typing import Any, NoReturn

import redis
import structlog
from celery import Task
from celery.exceptions import Reject
from celery.worker.request import Request

from followup.config.celery import TASK_NAME
from followup.config.redaction import argument_reprs
from followup.worker.celery_app import app
from followup.worker.runtime import get_runtime

log = structlog.get_logger(__name__)

# Handing a message back: a countdown of 1, 2, 4 ... seconds, capped (the only countdown the
# worker ever sets, far below the visibility timeout). If the hand-back itself cannot be
# published (the broker shares the store's Redis, and that Redis is restarting), the worker
# holds the message and tries again for up to HOLD_FOR_S, then requeues it: it is never
# acked without a record.
STORE_RETRY_MAX_S = 60
HOLD_FOR_S = 300


SCREENED_ID = "followup_screened_id"


class MaskedRequest(Request):  # type: ignore[misc]
    """The argument reprs a worker reports (its task-received event, what Flower shows) are
    rebuilt from the message itself, whoever sent it: ids, masked numbers, sizes."""

    _args: Any
    _kwargs: Any
    _argsrepr: str
    _kwargsrepr: str

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._argsrepr, self._kwargsrepr = argument_reprs(self._args, self._kwargs)
        # The id the intake screened (the message's header), kept apart from the request
        # context, which the body's embed may overlay (the intake refuses an embedded id too).
        self._request_dict[SCREENED_ID] = self.id


class PlaceCallTask(Task):  # type: ignore[misc]
    Request = MaskedRequest
    max_retries = None  # a hand-back is not a failure: it may take as many as an outage does


@app.task(name=TASK_NAME, bind=True, base=PlaceCallTask, typing=False)
def place_call(self: Task, *args: Any, **kwargs: Any) -> str:
    try:
        request_id = getattr(self.request, SCREENED_ID, None) or self.request.id
        return get_runtime().pipeline.handle(request_id, args, kwargs)
    except redis.DataError as exc:  # a value Redis cannot take: this message's fault, no outage
        log.error("message refused: a value the status store cannot take", error=str(exc)[:200])
        return "refused"
    except redis.RedisError as exc:
        # Refused, reset, stalled or read-only: without the status store nothing can be
        # claimed or recorded, and a message from another service may exist nowhere else.
        hand_back(self, exc)


def hand_back(task: Task, error: Exception) -> NoReturn:
    """Give the message back to the broker with a short countdown; raises Retry once it is
    published, or Reject(requeue=True) if it could not be for HOLD_FOR_S."""
    delay = min(STORE_RETRY_MAX_S, 2 ** min(task.request.retries, 6))
    log.error(
        "status store unavailable; message handed back to the broker",
        request_id=task.request.id,
        attempt=None,  # unknown: the store holds them
        state=None,
        retry_in_s=delay,
        error=type(error).__name__,
    )
    held_until = time.monotonic() + HOLD_FOR_S
    pause = 0.5
    while True:
        try:
            raise task.retry(countdown=delay)
        except Reject as refused:  # the broker did not take it either
            if time.monotonic() + pause > held_until:
                log.error(
                    "hand-back not published; message requeued",
                    request_id=task.request.id,
                    attempt=None,
                    state=None,
                )
                raise Reject(refused.reason, requeue=True) from None
            log.warning(
                "hand-back not published; holding the message",
                retry_in_s=pause,
                request_id=task.request.id,
                attempt=None,
                state=None,
            )
            time.sleep(pause)
            pause = min(pause * 2, 5.0)
