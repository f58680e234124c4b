"""Waits that end, and records that stay small (issue 21): a request that waits a long time
keeps a bounded history, a store that could evict keys is refused, the sweeper rides out a
broker outage, the calling window is checked again just before the call leaves, and pacing,
the breaker and credentials recover under pressure. Real Redis, real workers, the simulator
with the fault."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from followup.cli.local_stack import BIN, PrivateRedis
from tests.test_pacing import Fleet

pytestmark = pytest.mark.integration


@pytest.fixture
def fleet(env: dict[str, str], log_dir: Path) -> Iterator[Callable[..., Fleet]]:
    made: list[Fleet] = []

    def make(**settings: str) -> Fleet:
        made.append(Fleet(env, log_dir, **settings))
        return made[-1]

    yield make
    for f in made:
        f.stop()


def test_a_request_throttled_over_and_over_keeps_a_small_history(
    fleet: Callable[..., Fleet],
) -> None:
    """40 answers of 429 (three history entries each): the history keeps its first and last
    entries and one that counts what it left out, so a request throttled for days stays a
    few KB."""
    f = fleet(FOLLOWUP_MAX_ATTEMPTS="3")
    f.sim.set_faults(by_contact={"c-throttled": ["429"] * 40}, retry_after="0")
    request_id = f.enqueue(contact="c-throttled")
    f.start_workers(1)

    record = f.wait(request_id, "placed", timeout_s=120)
    assert record.attempts == 1
    events = [h.event for h in record.history]
    assert len(events) <= 31, events
    assert events[0] == "enqueued" and events[-1] == "placed"
    (left_out,) = [h for h in record.history if h.event == "entries left out"]
    assert left_out.count is not None and left_out.count >= 40 * 3 - 31
    assert left_out.since is not None and left_out.since < left_out.at
    key = f"{f.env['FOLLOWUP_NAMESPACE']}:hist:{request_id}"
    assert f.client.store.redis.memory_usage(key) < 8 * 1024


def test_a_worker_refuses_a_store_that_evicts_keys() -> None:
    """maxmemory-policy allkeys-lru could drop an idempotency key, and a redelivered message
    would be dialled twice: the worker exits, naming the setting and its safe value."""
    private = PrivateRedis("--maxmemory-policy", "allkeys-lru")
    try:
        env = {
            "FOLLOWUP_REDIS_URL": private.url,
            "FOLLOWUP_BROKER_URL": private.url,
            "FOLLOWUP_CLIENT_ID": "x",
            "FOLLOWUP_CLIENT_SECRET": "y",
            "FOLLOWUP_QUEUE": f"evict-{uuid.uuid4().hex[:6]}",
        }
        worker = subprocess.run(
            [str(BIN / "celery"), "-A", "followup", "worker", "--without-mingle"],
            env={**_no_followup_env(), **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        private.stop()
    assert worker.returncode == 2
    assert "Traceback" not in worker.stderr
    assert "maxmemory-policy allkeys-lru" in worker.stderr
    assert "noeviction" in worker.stderr


def _no_followup_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FOLLOWUP_")}
