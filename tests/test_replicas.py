"""FOLLOWUP_REDIS_WAIT_REPLICAS=1 when no replica confirms: a real primary, its replicas and
three Sentinels (tests/sentinels.py); the replicas are stalled with SIGSTOP, the primary
killed with SIGKILL.

Nothing is dialled on a write no replica holds, and nothing is stranded by one: a claim is
let go at once, a send marker is taken back (this process knows it sent nothing), and a
person's cancel is acknowledged only once a replica holds it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from followup.cli.local_stack import wait_until
from followup.worker.records import StatusRecord
from followup.worker.store import UnconfirmedWrite
from tests.conftest import Fleet, calls_for, unique
from tests.sentinels import FailoverRedis

pytestmark = pytest.mark.integration

PHONE = "+61298765432"


class Replicated(Fleet):
    def __init__(self, env: dict[str, str], log_dir: Path, replicas: int = 1) -> None:
        self.group = FailoverRedis(replicas=replicas)
        self.replicated = {
            "FOLLOWUP_REDIS_URL": self.group.url,
            "FOLLOWUP_REDIS_WAIT_REPLICAS": "1",
            "FOLLOWUP_REDIS_TIMEOUT_S": "1",
        }
        super().__init__(
            {
                **env,
                **self.replicated,
                "FOLLOWUP_QUEUE": f"{env['FOLLOWUP_QUEUE']}-{unique('replicas')}",
                # A slow first token (below) leaves seconds between the claim and the marker.
                "FOLLOWUP_HTTP_TIMEOUT_S": "5",
                "FOLLOWUP_CLAIM_LEASE_S": "21",
            },
            log_dir,
        )

    def stall(self) -> None:
        """SIGSTOP every replica: connections stay open and nothing answers."""
        for replica in self.group.replicas:
            replica.stall()

    def resume(self) -> None:
        for replica in self.group.replicas:
            replica.resume()

    def status(self, request_id: str) -> StatusRecord | None:
        try:
            return self.client.store.get(request_id)
        except redis.RedisError:  # after a failover, the next try finds the new primary
            return None

    def wait(self, request_id: str, *states: str, timeout_s: float = 30) -> StatusRecord:
        last: list[StatusRecord | None] = [None]

        def reached() -> StatusRecord | None:
            last[0] = self.status(request_id)
            return last[0] if last[0] is not None and last[0].state in states else None

        return wait_until(
            reached, timeout_s, lambda: f"{request_id} in {states}; last: {last[0]}", 0.05
        )

    def wait_event(self, request_id: str, event: str, timeout_s: float = 30) -> StatusRecord:
        def seen() -> StatusRecord | None:
            record = self.status(request_id)
            return record if record and any(h.event == event for h in record.history) else None

        return wait_until(seen, timeout_s, f"'{event}' in the history of {request_id}", 0.05)

    def close(self) -> None:
        self.resume()
        try:
            super().close()
        finally:
            self.group.stop()


@pytest.fixture
def replicated(env: dict[str, str], log_dir: Path) -> Iterator[Replicated]:
    fleet = Replicated(env, log_dir)
    yield fleet
    fleet.close()


@pytest.fixture
def two_replicas(env: dict[str, str], log_dir: Path) -> Iterator[Replicated]:
    """Two, so that one is left to confirm after the other is promoted."""
    fleet = Replicated(env, log_dir, replicas=2)
    yield fleet
    fleet.close()


def test_a_send_marker_no_replica_confirmed_is_taken_back_and_the_call_goes_once(
    replicated: Replicated, sim: Any
) -> None:
    sim.set_faults(token_latency_s=4)  # the worker's first token: claimed, nothing sent yet
    replicated.start_worker()
    request_id = replicated.enqueue(contact_id=unique(), user_id="u-1001", phone_number=PHONE)
    replicated.wait(request_id, "dialing")
    replicated.stall()

    record = replicated.wait_event(request_id, "not sent")  # the marker, taken back
    assert record.state == "scheduled" and record.waiting_for == "status_store"
    assert record.attempts == 0
    assert calls_for(sim, request_id) == []

    replicated.resume()
    record = replicated.wait(request_id, "placed", "unknown", "failed")
    assert record.state == "placed"
    assert len(calls_for(sim, request_id)) == 1
    assert record.attempts == 1


def test_a_claim_no_replica_confirmed_is_let_go_at_once(replicated: Replicated, sim: Any) -> None:
    request_id = replicated.enqueue(contact_id=unique(), user_id="u-1001", phone_number=PHONE)
    replicated.stall()
    replicated.start_worker()

    # Let go, not held `dialing` for the claim's lease (21 s).
    record = replicated.wait(request_id, "scheduled", timeout_s=15)
    assert record.waiting_for == "status_store"
    assert calls_for(sim, request_id) == []

    replicated.resume()
    replicated.wait(request_id, "placed")
    assert len(calls_for(sim, request_id)) == 1


def test_a_cancel_is_acknowledged_only_once_a_replica_holds_it(
    replicated: Replicated, sim: Any
) -> None:
    replicated.start_worker()
    later = (datetime.now(UTC) + timedelta(seconds=60)).isoformat()
    request_id = replicated.enqueue(
        contact_id=unique(), user_id="u-1001", phone_number=PHONE, not_before=later
    )
    replicated.wait(request_id, "scheduled")
    replicated.stall()

    refused = replicated.followup("cancel", request_id, **replicated.replicated)
    assert refused.returncode == 1
    assert "FOLLOWUP_REDIS_WAIT_REPLICAS" in refused.stderr and "again" in refused.stderr

    replicated.resume()
    again = replicated.followup("cancel", request_id, **replicated.replicated)
    assert "is cancelled" in again.stderr, again.stderr

    # The replica holds it: the primary's loss does not bring the request back.
    old = replicated.group.primary.port
    replicated.group.primary.kill()
    wait_until(
        lambda: _primary_port(replicated.group) not in (None, old), 30, "a replica promoted", 0.1
    )
    assert replicated.wait(request_id, "cancelled", "scheduled").state == "cancelled"
    assert calls_for(sim, request_id) == []


def _primary_port(group: FailoverRedis) -> int | None:
    try:
        return group.primary_port()
    except redis.RedisError:
        return None


def test_an_enqueue_no_replica_confirmed_raises_and_the_same_key_confirms_it(
    replicated: Replicated,
) -> None:
    request = {"contact_id": unique(), "user_id": "u-1001", "phone_number": PHONE}
    replicated.stall()
    with pytest.raises(UnconfirmedWrite):
        replicated.enqueue(**request, idempotency_key="crm-replicas-1")
    replicated.resume()
    request_id = replicated.enqueue(**request, idempotency_key="crm-replicas-1")
    record = replicated.status(request_id)
    assert record is not None and record.state == "queued"
    assert replicated.enqueue(**request, idempotency_key="crm-replicas-1") == request_id


def test_the_primary_lost_while_a_marker_is_unconfirmed_the_request_still_goes_once(
    two_replicas: Replicated, sim: Any
) -> None:
    """The marker and its take-back are on the primary only (the replicas stall); the
    primary is killed and a replica, which has neither, is promoted: the take-back lands
    there, and the request is placed once, not left `dialing` or made `unknown`."""
    sim.set_faults(token_latency_s=4)
    two_replicas.start_worker()
    request_id = two_replicas.enqueue(contact_id=unique(), user_id="u-1001", phone_number=PHONE)
    two_replicas.wait(request_id, "dialing")
    two_replicas.stall()
    two_replicas.wait_event(request_id, "not sent")

    old = two_replicas.group.primary.port
    two_replicas.group.primary.kill()
    two_replicas.resume()
    wait_until(
        lambda: _primary_port(two_replicas.group) not in (None, old), 30, "a replica promoted", 0.1
    )
    record = two_replicas.wait(request_id, "placed", "unknown", "failed", timeout_s=60)
    assert record.state == "placed"
    assert len(calls_for(sim, request_id)) == 1
