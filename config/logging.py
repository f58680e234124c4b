"""structlog set-up: one event per transition, phone numbers masked, secrets dropped."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from followup.config.redaction import REDACTED, is_secret_key, mask_text, redact
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


def configure_logging(settings: Settings) -> None:
    level = getattr(logging, settings.log_level)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if settings.log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_event,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # httpx logs every request URL at INFO; keep it quiet (headers are never logged by it).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    # At DEBUG, Celery's pool prints each task's whole message, personal data and all.
    logging.getLogger("celery.pool").setLevel(max(level, logging.INFO))


class RedactingFilter(logging.Filter):
    """For stdlib log records (Celery's and kombu's own): masks phone-like text in the
    formatted message, so even `-l DEBUG` (which prints task arguments) shows no number."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def redact_handlers(logger: logging.Logger) -> None:
    for handler in logger.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
