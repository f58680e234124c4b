"""The Celery worker: `celery -A worker worker`, and what a worker uses.

`worker.app` is built on first access, so importing a part (the store, the client) does not
read settings or create the Celery app.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "app":
        from worker.celery_app import app

        return app
    raise AttributeError(f"module 'worker' has no attribute {name!r}")
