"""The one place a `followup.place_call` message is built and published."""

from __future__ import annotations

from typing import Any

from celery import Celery

from followup.config.celery import TASK_NAME


def publish(
    app: Celery, request_id: str, request: dict[str, Any], queue: str, producer: Any = None
) -> None:
    """Publish the request; the task id is the request id, so Flower and the store agree.

    argsrepr/kwargsrepr keep the phone number out of Flower's events.
    """
    app.send_task(
        TASK_NAME,
        kwargs={"request": request},
        task_id=request_id,
        queue=queue,
        producer=producer,
        argsrepr="()",
        kwargsrepr=f"{{'request_id': '{request_id}'}}",
    )
