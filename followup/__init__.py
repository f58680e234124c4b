"""followup: places follow-up phone calls for contact-center agents.

The producer API, for services that embed it (it loads no worker code, configures no
logging and leaves the host's current Celery app alone):

    from followup import enqueue_follow_up
    request_id = enqueue_follow_up(contact_id="c-12345", user_id="u-67890",
                                   phone_number="+61298765432", idempotency_key="crm-881")

`followup.app` is the worker's Celery app (`celery -A followup worker`, `celery -A followup
flower`); it is built only when that attribute is first read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _map_checkout_subpackages() -> None:
    """Run from a checkout, this folder shadows the installed package on sys.path, and its
    sub-packages live beside it (pyproject.toml's package-dir maps ./config to followup.config
    and so on): add the checkout to this package's search path so that they resolve."""
    checkout = Path(__file__).resolve().parent.parent
    from_checkout = (checkout / "pyproject.toml").is_file() and (checkout / "worker").is_dir()
    if from_checkout and str(checkout) not in __path__:
        __path__.append(str(checkout))


_map_checkout_subpackages()

from followup.config.settings import ConfigError, Settings
from followup.tasks.outcomes import Outcome, outcomes
from followup.tasks.producer import (
    FollowUpClient,
    IdempotencyConflict,
    enqueue_follow_up,
    enqueue_many,
    get_status,
)
from followup.tasks.request import FollowUpRequest, InvalidRequest
from followup.worker.records import State, StatusRecord

__all__ = [
    "ConfigError",
    "FollowUpClient",
    "FollowUpRequest",
    "IdempotencyConflict",
    "InvalidRequest",
    "Outcome",
    "Settings",
    "State",
    "StatusRecord",
    "enqueue_follow_up",
    "enqueue_many",
    "get_status",
    "outcomes",
]


def __getattr__(name: str) -> Any:
    # The worker's entry point is loaded on demand, so that a producer never loads it.
    if name == "app":
        from followup.worker.celery_app import app

        return app
    raise AttributeError(f"module 'followup' has no attribute {name!r}")
