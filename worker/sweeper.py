"""The sweeper: the status store's due set, turned back into broker messages.

It is what makes the store, not the broker, the source of truth:
- retries and other waits are due times in the store, published when due (the worker never
  sets a Celery countdown, so no wait can outlive the Redis visibility_timeout);
- a `queued` request that no worker claimed within FOLLOWUP_REDELIVER_AFTER_S (its message
  was lost, or a killed worker held it) is published again;
- a `dialing` claim whose lease ran out is resolved: `unknown` if the call was sent, else
  published again.
Every worker process runs one; an entry is taken atomically, so sweepers never double up,
and a spare message is harmless because the claim admits only one. Each pass leaves a
heartbeat in the store under the worker's name, which `followup worker-check` reads: a
worker that consumes but does not sweep is not healthy.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import redis
import structlog

from followup.worker.store import DueRequest, StatusStore

log = structlog.get_logger(__name__)

Publish = Callable[[str, dict[str, Any], str], None]


# Publishes that fail in a row before a sweep takes the broker for down and leaves the rest
# of its batch for the next sweep (due again at once, nothing counted).
FAILURES_IN_A_ROW = 5
HOLD_S = 60.0  # how long a taken entry is held: longer than a batch's publishes take


class Sweeper:
    def __init__(
        self,
        store: StatusStore,
        publish: Publish,
        *,
        lease_s: float,
        batch: int = 200,
        worker: str = "",
    ) -> None:
        self.store = store
        self.publish = publish
        self.lease_s = lease_s
        self.batch = batch
        self.worker = worker  # the Celery node name its heartbeat is kept under

    def sweep_once(self) -> int:
        """One pass over what is due; returns how many messages it published.

        Publish, then move the due time (`StatusStore.published`): a request whose publish
        failed is due again at the next sweep, so a broker outage costs its own length, and
        one failed publish does not abandon the rest of the batch."""
        outcomes: list[tuple[DueRequest, bool]] = []
        failures, error = 0, ""
        for due in self.store.take_due(self.batch, hold_s=HOLD_S):
            if failures >= FAILURES_IN_A_ROW:
                outcomes.append((due, False))  # the broker is down: the next sweep tries
                continue
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
            try:  # under the record's own id, to its own queue: never a new id
                self.publish(due.request_id, due.request, due.queue)
            except ValueError as exc:  # a record written before ids and queues had rules
                log.error("not republished: the record's id or queue is refused", error=str(exc))
                outcomes.append((due, True))  # not the broker's fault: its due time moves on
                continue
            except Exception as exc:  # the broker's own connection errors vary by transport
                failures, error = failures + 1, type(exc).__name__
                outcomes.append((due, False))
                continue
            failures = 0
            outcomes.append((due, True))
        self.store.published(outcomes)
        published = sum(1 for _, ok in outcomes if ok)
        if published < len(outcomes):
            log.warning(
                "sweeper could not publish; they are due again at the next sweep",
                not_published=len(outcomes) - published,
                published=published,
                error=error,
            )
        return published

    def run(self, stop: threading.Event, interval_s: float) -> None:
        """Sweep every interval until `stop` is set; errors are logged, never fatal."""
        self._beat(interval_s)
        while not stop.wait(interval_s):
            try:
                self._beat(interval_s)
                count = self.sweep_once()
                if count:
                    log.info("sweeper published", count=count)
            except redis.RedisError as exc:
                log.warning("status store unavailable; sweep skipped", error=type(exc).__name__)
            except Exception:
                log.exception("sweep failed; will try again")

    def _beat(self, interval_s: float) -> None:
        if not self.worker:
            return
        with contextlib.suppress(redis.RedisError):  # the pass that follows says it
            self.store.sweeper_alive(self.worker, heartbeat_for(interval_s))


def heartbeat_for(interval_s: float) -> float:
    """How long a sweeper's heartbeat lasts: several passes, so one slow pass is not a death."""
    return max(interval_s * 5, 15.0) + interval_s
