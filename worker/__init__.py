"""The Celery worker: `celery -A worker worker`, and what a worker uses."""

from __future__ import annotations

from functools import cache

from config.settings import get_settings
from worker.celery_app import app
from worker.runtime import Runtime


@cache
def get_runtime() -> Runtime:
    """This process's runtime (Redis, HTTP pool, token cache), built on first use."""
    return Runtime(get_settings())


__all__ = ["app", "get_runtime"]
