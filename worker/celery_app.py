"""The worker's entry point: `celery -A followup worker` and `celery -A followup flower`.

Reads the settings (a bad one exits 2, naming the variable), builds the app, and ties the
worker's life to Celery's signals: logging once Celery sets up its own, the credentials
check at start, the sweeper while the worker runs.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

import redis
import structlog
from celery import signals

from followup.config.celery import create_app
from followup.config.logging import configure_logging, redact_handlers
from followup.config.settings import ConfigError, get_settings
from followup.tasks.publish import publish
from followup.worker.runtime import get_runtime

try:
    settings = get_settings()
except ConfigError as exc:
    print(f"followup: {exc}", file=sys.stderr)
    sys.exit(2)

app = create_app(settings, include=["followup.tasks.place_call"])

log = structlog.get_logger(__name__)
_sweeper_stop: threading.Event | None = None


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _setup_logging(logger: logging.Logger, **_: Any) -> None:
    configure_logging(settings)
    redact_handlers(logger)
    redact_handlers(logging.getLogger())


@signals.worker_init.connect
def _check_worker_config(**_: Any) -> None:
    """A worker without API credentials fails now, naming the variable, not at the first call."""
    try:
        settings.require_credentials()
    except ConfigError as exc:
        sys.stderr.write(f"followup: {exc}\n")
        sys.stderr.flush()
        os._exit(2)  # Celery logs and swallows exceptions raised in signal handlers


@signals.worker_ready.connect
def _start_sweeper(**_: Any) -> None:
    global _sweeper_stop
    runtime = get_runtime()
    runtime.warm_up()
    _sweeper_stop = runtime.start_sweeper(
        lambda request_id, request, queue: publish(app, request_id, request, queue)
    )
    try:
        durability = runtime.store.check_durability()
    except redis.RedisError as exc:
        durability = f"unknown: the status store did not answer ({type(exc).__name__})"
    log.info(
        "worker ready",
        queue=settings.queue,
        concurrency=settings.worker_concurrency,
        status_store=durability,
    )


@signals.worker_shutdown.connect
def _stop(**_: Any) -> None:
    if _sweeper_stop is not None:
        _sweeper_stop.set()
