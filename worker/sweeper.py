"""The sweeper: the status store's due set, turned back into broker messages.

It is what makes the store, not the broker, the source of truth:
- retries and other waits are due times in the store, published when due (the worker never
  sets a Celery countdown, so no wait can outlive the Redis visibility_timeout);
- a `queued` request that no worker claimed within FOLLOWUP_REDELIVER_AFTER_S (its message
  was lost, or a killed worker held it) is published again;
- a `dialing` claim whose lease ran out is resolved: `unknown` if the call was sent, else
  published again.
Every worker process runs one; an entry is taken atomically, so sweepers never double up,
and a spare message is harmless because the claim admits only one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import redis
import structlog

from followup.worker.store import StatusStore

log = structlog.get_logger(__name__)

Publish = Callable[[str, dict[str, Any], str], None]


class Sweeper:
    def __init__(
        self,
        store: StatusStore,
        publish: Publish,
        *,
        lease_s: float,
        batch: int = 200,
    ) -> None:
        self.store = store
        self.publish = publish
        self.lease_s = lease_s
        self.batch = batch

    def sweep_once(self) -> int:
        """One pass over what is due; returns how many messages it published."""
        published = 0
        for due in self.store.take_due(self.batch):
            if due.state == "dialing":
                claim = self.store.claim(due.request_id, lease_s=self.lease_s, mode="sweep")
                log.info(
                    "stale claim resolved",
                    request_id=due.request_id,
                    attempt=claim.attempts,
                    state=claim.state,
                    outcome=claim.outcome,
                )
                if claim.outcome != "requeued":
                    continue
            self.publish(due.request_id, due.request, due.queue)
            published += 1
        return published

    def run(self, stop: threading.Event, interval_s: float) -> None:
        """Sweep every interval until `stop` is set; errors are logged, never fatal."""
        while not stop.wait(interval_s):
            try:
                count = self.sweep_once()
                if count:
                    log.info("sweeper published", count=count)
            except redis.RedisError as exc:
                log.warning("status store unavailable; sweep skipped", error=type(exc).__name__)
            except Exception:
                log.exception("sweep failed; will try again")
