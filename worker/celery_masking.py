"""Celery never shows a phone number: not in published messages' argument reprs, not in the
events Flower reads, whoever sent the message."""

from __future__ import annotations

from typing import Any

from celery.app.amqp import AMQP
from celery.worker.request import Request

from config.redaction import mask_text


class MaskingAMQP(AMQP):  # type: ignore[misc]
    """Every message this app publishes (producer, sweeper, Flower's send-task) carries
    argument reprs with phone numbers masked, in its headers and in its task-sent event."""

    def as_task_v2(self, *args: Any, **kwargs: Any) -> Any:
        message = super().as_task_v2(*args, **kwargs)
        for key in ("argsrepr", "kwargsrepr"):
            message.headers[key] = mask_text(str(message.headers.get(key) or ""))
        if message.sent_event:
            for key in ("args", "kwargs"):
                message.sent_event[key] = mask_text(str(message.sent_event.get(key) or ""))
        return message


class MaskedRequest(Request):  # type: ignore[misc]
    """On the worker: masks the argument reprs of a message another service published
    (its task-received event is what Flower shows)."""

    _argsrepr: str
    _kwargsrepr: str

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._argsrepr = mask_text(self._argsrepr or "")
        self._kwargsrepr = mask_text(self._kwargsrepr or "")
