"""The Celery task `followup.place_call`: a thin shell around `followup.worker.pipeline`.

Any service can publish it without importing this project:

    celery.send_task("followup.place_call", queue="followup",
                     kwargs={"request": {"contact_id": "c-12345", "user_id": "u-67890",
                                         "phone_number": "+61298765432"}})
"""

from __future__ import annotations

from typing import Any

import redis
import structlog
from celery import Task
from celery.worker.request import Request

from followup.config.celery import TASK_NAME
from followup.config.redaction import mask_text
from followup.worker.celery_app import app
from followup.worker.runtime import get_runtime

log = structlog.get_logger(__name__)

STORE_RETRY_MAX_S = 60


class MaskedRequest(Request):  # type: ignore[misc]
    """Masks the argument reprs of a message another service published (its task-received
    event is what Flower shows)."""

    _argsrepr: str
    _kwargsrepr: str

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._argsrepr = mask_text(self._argsrepr or "")
        self._kwargsrepr = mask_text(self._kwargsrepr or "")


class PlaceCallTask(Task):  # type: ignore[misc]
    Request = MaskedRequest


@app.task(name=TASK_NAME, bind=True, base=PlaceCallTask, typing=False)
def place_call(self: Task, *args: Any, **kwargs: Any) -> str:
    delivery = self.request.delivery_info or {}
    try:
        return get_runtime().pipeline.handle(
            self.request.id, args, kwargs, queue=delivery.get("routing_key")
        )
    except redis.ConnectionError as exc:
        # Without the status store nothing can be claimed or recorded, and a message from
        # another service may exist nowhere else: hand it back to the broker. The one
        # countdown this worker sets: short and capped, far below the visibility timeout.
        delay = min(STORE_RETRY_MAX_S, 2 ** min(self.request.retries, 6))
        log.error(
            "status store unreachable; message handed back to the broker",
            request_id=self.request.id,
            retry_in_s=delay,
            error=str(exc),
        )
        raise self.retry(countdown=delay, max_retries=None) from None
