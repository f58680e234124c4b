"""The Celery app, built from Settings; the settings the delivery guarantees rest on.

design.md explains each setting. The app is never made Celery's current or default app, so
a service that embeds the producer keeps its own Celery app and its `@shared_task`s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import Celery
from celery.app.amqp import AMQP
from kombu.entity import Exchange, Queue

from followup.config.broker import TRANSPORT as REDIS_TRANSPORT
from followup.config.redaction import argument_reprs, mask_text
from followup.config.settings import Settings

TASK_NAME = "followup.place_call"


def celery_config(settings: Settings) -> dict[str, Any]:
    broker = rabbitmq_config(settings) if settings.broker_is_rabbitmq else redis_config(settings)
    return {
        "broker_url": settings.effective_broker_url,
        "broker_connection_retry_on_startup": True,
        **broker,
        "task_serializer": "json",
        "accept_content": ["json"],
        # A killed worker's message comes back; the atomic claim makes that harmless.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # On a broker blip, let a call in flight finish and be recorded (Celery 6 would cancel
        # it by default); the message comes back, and the claim makes that redelivery a no-op.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        # The worker waits on the API; threads suit that, prefork would waste memory.
        "worker_pool": "threads",
        "worker_concurrency": settings.worker_concurrency,
        # The status store is the record, not Celery's result backend.
        "task_ignore_result": True,
        "result_backend": None,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_default_queue": settings.queue,
        "task_routes": {TASK_NAME: {"queue": settings.queue}},
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
    }


def redis_config(settings: Settings) -> dict[str, Any]:
    return {
        "broker_transport": REDIS_TRANSPORT,
        # Longer than any wait: the worker never sets a countdown for a wait (waits go
        # through the status store's due set), so a task holds its message for one attempt.
        "broker_transport_options": {"visibility_timeout": settings.visibility_timeout_s},
    }


def rabbitmq_config(settings: Settings) -> dict[str, Any]:
    """RabbitMQ: a quorum queue (replicated; FOLLOWUP_QUEUE_TYPE) on a topic exchange, so
    that the one countdown the worker sets (handing a message back while the status store
    is down) uses RabbitMQ's native delayed delivery instead of a held message; publisher
    confirms on every publish. A killed worker's unacked messages come straight back (no
    visibility timeout). Another service's Celery client declares the queue the same way
    (docs/scale.md)."""
    queue_type = settings.queue_type
    return {
        "broker_transport_options": {"confirm_publish": True},
        "task_queues": [
            Queue(  # type: ignore[no-untyped-call]
                settings.queue,
                Exchange(settings.queue, type="topic"),  # type: ignore[no-untyped-call]
                routing_key=settings.queue,
                queue_arguments={"x-queue-type": queue_type},
            )
        ],
        "task_default_exchange_type": "topic",
        "task_create_missing_queue_type": queue_type,
        "task_create_missing_queue_exchange_type": "topic",
        "broker_native_delayed_delivery_queue_type": queue_type,
    }


class MaskingAMQP(AMQP):  # type: ignore[misc]
    """Every message this app publishes (producer, sweeper, Flower's send-task) carries
    argument reprs a dashboard may show: ids, masked numbers, and the sizes of everything else
    (`redaction.summarize`), in its headers and so in its task-sent event."""

    def as_task_v2(
        self,
        task_id: str,
        name: str,
        args: Any = None,
        kwargs: Any = None,
        *more: Any,
        argsrepr: str | None = None,
        kwargsrepr: str | None = None,
        **options: Any,
    ) -> Any:
        safe_args, safe_kwargs = argument_reprs(args, kwargs)
        return super().as_task_v2(
            task_id,
            name,
            args,
            kwargs,
            *more,
            argsrepr=safe_args if argsrepr is None else mask_text(argsrepr),
            kwargsrepr=safe_kwargs if kwargsrepr is None else mask_text(kwargsrepr),
            **options,
        )


def create_app(settings: Settings, include: Sequence[str] = ()) -> Celery:
    """A Celery app for followup's queue; it never becomes the process's current app."""
    app = Celery("followup", include=list(include), amqp=MaskingAMQP, set_as_current=False)
    app.conf.update(celery_config(settings))
    return app
