"""Logging for the entry points (the worker, the CLI); library code never configures it.

One pipeline: structlog's events and the standard library's records (Celery's, kombu's)
go through one handler, rendered by structlog (JSON lines with FOLLOWUP_LOG_FORMAT=json,
else readable lines), so a line is never interleaved with another, and every value of every
line is masked: phone numbers and personal data, and secrets dropped, at every level.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import MutableMapping
from typing import Any

import structlog
from structlog.typing import Processor

from followup.config.redaction import REDACTED, is_secret_key, redact
from followup.config.settings import Settings

# structlog's own keys are left alone; every other value goes through redaction.
_STRUCTLOG_KEYS = {"event", "level", "timestamp", "logger", "exc_info", "stack_info"}


def redact_event(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor: masks phone numbers and drops secrets, at every level."""
    for key, value in list(event_dict.items()):
        if key in _STRUCTLOG_KEYS and key != "event":
            continue
        event_dict[key] = REDACTED if is_secret_key(key) else redact(value)
    return event_dict


class UnackedOnDrop(logging.Filter):
    """kombu's `Couldn't ack/reject <tag>` (CRITICAL, with a traceback) for each task in flight
    when the broker's connection drops: one WARNING a drop instead, saying why nothing is lost.

    The broker redelivers what was not acknowledged, and the status store answers each
    redelivery (the call was placed: done; still dialling: busy), so no request is lost and
    none is called twice. Repeats within `quiet_s` of the last are the same drop: dropped.
    """

    def __init__(self, quiet_s: float = 30.0) -> None:
        super().__init__()
        self.quiet_s = quiet_s
        self._last = -float("inf")
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(("Couldn't ack", "Couldn't reject")):
            return True
        with self._lock:
            now = time.monotonic()
            repeat, self._last = now - self._last < self.quiet_s, now
        if repeat:
            return False
        reason = record.args[1] if isinstance(record.args, tuple) and len(record.args) > 1 else ""
        record.msg = (
            "the broker connection dropped with tasks in flight; their acks could not be sent "
            "(%s). Nothing is lost: the broker redelivers them and each redelivery is answered "
            "busy or done from the status store, never called twice"
        )
        record.args = (type(reason).__name__ if reason else "connection closed",)
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info = record.exc_text = None
        return True


# Celery acknowledges late tasks through kombu from its request module's logger.
_ACKING_LOGGER = "celery.worker.request"


def configure_logging(settings: Settings, stdlib_level: int | None = None) -> None:
    """structlog events at FOLLOWUP_LOG_LEVEL; other libraries' records at `stdlib_level`
    (the worker's `-l`), else the same level."""
    level = getattr(logging, settings.log_level)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if settings.log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    stamped: list[Processor] = [
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_event,
    ]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *stamped,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=stamped,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact_event,  # again: the traceback is text only from here on
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(stdlib_level if stdlib_level is not None else level)
    logging.getLogger("followup").setLevel(level)  # our own events, whatever the rest
    # httpx logs every request URL at INFO; keep it quiet (headers are never logged by it).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    # At DEBUG, Celery's pool prints each task's whole message, personal data and all.
    logging.getLogger("celery.pool").setLevel(max(root.level, logging.INFO))
    # Celery's own "Task ... received" and "... succeeded" lines repeat what our transition
    # lines say (with the outcome); below DEBUG, they cost a formatted line per call each.
    acking = logging.getLogger(_ACKING_LOGGER)
    if not any(isinstance(f, UnackedOnDrop) for f in acking.filters):
        acking.addFilter(UnackedOnDrop())
    for per_task in ("celery.worker.strategy", "celery.app.trace"):
        logging.getLogger(per_task).setLevel(
            logging.DEBUG if level <= logging.DEBUG else logging.WARNING
        )
