"""The Celery app, built from Settings: `celery -A worker worker` / `celery -A worker flower`."""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

import structlog
from celery import Celery, signals

from config.celery import celery_config
from config.logging import configure_logging, redact_handlers
from config.settings import ConfigError, get_settings
from worker.celery_masking import MaskingAMQP

try:
    settings = get_settings()
except ConfigError as exc:
    print(f"followup: {exc}", file=sys.stderr)
    sys.exit(2)


configure_logging(settings)
app = Celery("followup", include=["tasks.place_call"], amqp=MaskingAMQP)
app.conf.update(celery_config(settings))

log = structlog.get_logger(__name__)
_sweeper_stop: threading.Event | None = None


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _redact_celery_logs(logger: logging.Logger, **_: Any) -> None:
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
    from tasks.publish import publish
    from worker.runtime import get_runtime

    _sweeper_stop = get_runtime().start_sweeper(publish)
    log.info("worker ready", queue=settings.queue, concurrency=settings.worker_concurrency)


@signals.worker_shutdown.connect
def _stop(**_: Any) -> None:
    if _sweeper_stop is not None:
        _sweeper_stop.set()
