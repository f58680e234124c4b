"""The status store fails over, for real: a primary, two replicas and three Sentinels on
loopback; the primary is killed with SIGKILL while a worker places calls."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from followup.cli.local_stack import wait_until
from followup.worker.records import TERMINAL_STATES, StatusRecord
from tests.conftest import Fleet, unique
from tests.sentinels import FailoverRedis

pytestmark = pytest.mark.integration

REQUESTS = 80
PENDING = {"queued", "scheduled", "retrying"}


def _settled(record: StatusRecord | None) -> bool:
    """Terminal, or visibly pending: waiting with its next attempt time."""
    return record is not None and (
        record.state in TERMINAL_STATES
        or (record.state in PENDING and bool(record.next_attempt_at))
    )


def _placed_at(record: StatusRecord) -> datetime | None:
    return next((h.at for h in record.history if h.state == "placed"), None)


def test_the_store_fails_over_mid_run_and_nothing_is_lost_or_called_twice(
    env: dict[str, str], broker: str, log_dir: Path, sim: Any, record_property: Any
) -> None:
    group = FailoverRedis(replicas=2)
    fleet = Fleet(
        {
            **env,
            "FOLLOWUP_BROKER_URL": broker,
            "FOLLOWUP_REDIS_URL": group.url,
            "FOLLOWUP_QUEUE": f"{env['FOLLOWUP_QUEUE']}-{unique('failover')}",
            # The claim and the send marker wait for one replica: after the failover, the
            # new primary holds every marker the old one confirmed.
            "FOLLOWUP_REDIS_WAIT_REPLICAS": "1",
            "FOLLOWUP_REDIS_TIMEOUT_S": "1",
        },
        log_dir,
    )
    try:
        sim.set_faults(call_latency_s=0.2)
        store = fleet.client.store
        ids = fleet.client.enqueue_many(
            [
                {
                    "contact_id": unique(),
                    "user_id": ("u-1001", "u-1002")[i % 2],
                    "phone_number": "+61298765432",
                }
                for i in range(REQUESTS)
            ]
        )
        fleet.start_worker()
        wait_until(lambda: store.counts()["placed"] >= 15, 30, "15 calls placed before the kill")

        old_primary = group.primary.port
        killed = datetime.now().astimezone()
        group.primary.kill()

        def failed_over() -> bool:
            try:
                return group.primary_port() != old_primary
            except redis.RedisError:
                return False

        wait_until(failed_over, 30, "a replica promoted", 0.1)
        promoted_s = (datetime.now().astimezone() - killed).total_seconds()

        records: dict[str, StatusRecord | None] = {}

        def all_settled() -> bool:
            try:
                records.update({i: store.get(i) for i in ids})
            except redis.RedisError:  # the client finds the new primary on its next try
                return False
            return all(_settled(r) for r in records.values())

        wait_until(all_settled, 120, "every request terminal or visibly pending", 0.5)
    finally:
        fleet.close()
        group.stop()

    calls = Counter(c["correlation_id"] for c in sim.calls())
    assert [i for i in ids if calls[i] > 1] == []  # none called twice
    placed = [r for r in records.values() if r and r.state == "placed"]
    assert all(calls[r.request_id] == 1 for r in placed)
    assert len(placed) >= 15

    times = sorted(t for r in placed if (t := _placed_at(r)))
    before = max((t for t in times if t < killed), default=killed)
    after = min((t for t in times if t >= killed), default=None)
    states = Counter(str(r.state) for r in records.values() if r)
    stood = f"{(after - before).total_seconds():.1f} s" if after else "until the end"
    record_property(  # printed at the end of the run (conftest's pytest_terminal_summary)
        "measured",
        f"failover, broker {broker.partition(':')[0]}: replica promoted {promoted_s:.1f} s "
        f"after the SIGKILL; the fleet stood still {stood} (last call placed before the kill "
        f"to the first after it); states {dict(states)}",
    )
