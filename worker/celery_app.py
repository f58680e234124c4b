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
import time
from typing import Any, NoReturn

import redis
import structlog
from celery import signals

from followup.config.celery import create_app
from followup.config.logging import configure_logging
from followup.config.redaction import url_host
from followup.config.settings import ConfigError, Settings, get_settings
from followup.tasks.publish import publish
from followup.worker.runtime import get_runtime
from followup.worker.store import MIN_VERSION

try:
    settings = get_settings()
except ConfigError as exc:
    print(f"followup: {exc}", file=sys.stderr)
    sys.exit(2)

app = create_app(settings, include=["followup.tasks.place_call"])
# Every message is screened before Celery acts on it, and remote control is narrowed
# (followup.worker.intake; docs/security.md).
app.conf.worker_consumer = "followup.worker.intake:GuardedConsumer"

# `celery -A followup flower` listens on 127.0.0.1 unless told otherwise (--address, or
# FLOWER_ADDRESS): Flower's own default is every interface. Flower reads FLOWER_* variables
# after this module is loaded, and its command line after them.
os.environ.setdefault("FLOWER_ADDRESS", "127.0.0.1")

log = structlog.get_logger(__name__)
_stops: list[threading.Event] = []


@signals.setup_logging.connect
def _setup_logging(loglevel: int | str | None = None, **_: Any) -> None:
    """Celery hands its logging to us: one handler for its records and our events."""
    level = logging.getLevelName(loglevel) if isinstance(loglevel, str) else loglevel
    configure_logging(settings, stdlib_level=level if isinstance(level, int) else None)


@signals.worker_init.connect
def _check_worker_config(**_: Any) -> None:
    """A worker that cannot work fails now, in one line naming the setting, not at the
    first call: no API credentials (what its platform needs), no status store, or one too
    old."""
    try:
        get_runtime().platform.token_request()  # the platform's credentials, all of them
    except ConfigError as exc:
        _exit(str(exc))
    store = get_runtime().store
    where = f"{url_host(settings.redis_url)} (FOLLOWUP_REDIS_URL)"
    deadline = time.monotonic() + REDIS_GRACE_S
    while True:
        try:
            version = store.server_version()
            break
        except redis.RedisError as exc:
            if time.monotonic() > deadline:
                _exit(
                    f"the status store at {where} does not answer ({type(exc).__name__}): "
                    "start Redis there, or set FOLLOWUP_REDIS_URL to one that runs"
                )
            time.sleep(0.5)
    if version < MIN_VERSION:
        needed = ".".join(map(str, MIN_VERSION))
        _exit(
            f"the status store at {where} runs Redis {'.'.join(map(str, version))}; followup "
            f"needs Redis {needed} or newer (or Valkey)"
        )
    _check_eviction(store.eviction_policy(), where)


def _check_eviction(policy: str | None, where: str) -> None:
    """A Redis that evicts keys when full can drop an idempotency key or a finished record,
    and a redelivered message would then be dialled twice: such a store is refused."""
    if policy is None:
        log.warning(
            "the status store does not allow CONFIG, so its maxmemory-policy is unknown: it "
            "must be noeviction, or a full Redis may drop records and a request be dialled "
            "twice",
            status_store=where,
        )
    elif policy != "noeviction":
        _exit(
            f"the status store at {where} evicts keys when it is full (maxmemory-policy "
            f"{policy}): an evicted idempotency key or record lets a redelivered message be "
            "dialled twice; set maxmemory-policy noeviction on that Redis (redis.conf, or "
            "CONFIG SET maxmemory-policy noeviction)"
        )


REDIS_GRACE_S = 5.0  # a worker may start just before its Redis does


def _exit(message: str) -> NoReturn:
    sys.stderr.write(f"followup: {message}\n")
    sys.stderr.flush()
    os._exit(2)  # Celery logs and swallows exceptions raised in signal handlers


@signals.worker_ready.connect
def _start_sweeper(sender: Any = None, **_: Any) -> None:
    """The background loops first, whatever happens after: the sweeper (retries and every
    other wait depend on it) and the reconciler; then metrics, which may fail on their own."""
    runtime = get_runtime()
    runtime.node = getattr(sender, "hostname", None) or runtime.node  # as worker-check names it
    _stops.append(
        runtime.start_sweeper(
            lambda request_id, request, queue: publish(app, request_id, request, queue),
            worker=str(getattr(sender, "hostname", "") or ""),
        )
    )
    reconciler = runtime.start_reconciler()
    if reconciler is not None:
        _stops.append(reconciler)
    runtime.warm_up()
    _stops.append(runtime.start_credentials_beacon())
    if settings.metrics_port:
        runtime.metrics.serve(settings.metrics_address, settings.metrics_port)
    try:
        durability = runtime.store.check_durability()
    except redis.RedisError as exc:
        durability = f"unknown: the status store did not answer ({type(exc).__name__})"
    if not settings.enforce_calling_hours:
        log.warning(
            "FOLLOWUP_ENFORCE_CALLING_HOURS is off: customers are called at any hour of their "
            "day or night; for internal testing only"
        )
    log.info(
        "worker ready",
        dialect=settings.api_dialect,
        api=api_shown(settings),
        redis=url_host(settings.redis_url),
        broker=url_host(settings.effective_broker_url),
        queue=settings.queue,
        concurrency=settings.worker_concurrency,
        status_store=durability,
    )


def api_shown(settings: Settings) -> str:
    """The API's host for the ready line; a platform that finds its API per token (without
    FOLLOWUP_API_BASE_URL) says so."""
    if settings.api_discovered:
        return "discovered per token"
    return url_host(settings.effective_api_base_url)


@signals.worker_shutdown.connect
def _stop(**_: Any) -> None:
    for stop in _stops:
        stop.set()
