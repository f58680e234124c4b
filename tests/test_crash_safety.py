"""Never call twice, never lose a request: kills, redeliveries and races over real parts."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from followup import IdempotencyConflict, enqueue_follow_up
from followup.cli.local_stack import wait_until
from followup.tasks.publish import publish
from tests.conftest import calls_for, followup, unique

pytestmark = pytest.mark.integration


def test_kill_9_while_the_platform_holds_the_call_never_redials(
    private_queue: str, start_worker: Any, sim: Any, store: Any, wait_for: Any, wait_event: Any
) -> None:
    contact = unique()
    sim.set_faults(by_contact={contact: ["hang"]}, hang_s=20)
    # A 2 s read timeout leaves time to kill the worker while its request is in flight.
    slow = {"FOLLOWUP_HTTP_TIMEOUT_S": "2", "FOLLOWUP_CLAIM_LEASE_S": "9"}
    first = start_worker(FOLLOWUP_QUEUE=private_queue, **slow)
    request_id = enqueue_follow_up(
        contact_id=contact, user_id="u-1001", phone_number="+61298765432", queue=private_queue
    )
    wait_until(lambda: calls_for(sim, request_id), 10, "the platform to hold the call")
    first.kill()  # the POST has left; the platform has the call and has not answered

    start_worker(FOLLOWUP_QUEUE=private_queue, **slow)
    record = wait_for(request_id, "unknown", timeout_s=9 + 10)

    assert len(calls_for(sim, request_id)) == 1
    assert "claim expired after sending" in [h.event for h in record.history]
    assert record.last_error.code == "outcome.unknown"
    time.sleep(2)  # the sweeper keeps running; nothing may dial it again by itself
    assert len(calls_for(sim, request_id)) == 1
    assert store.get(request_id).state == "unknown"

    # The explicit human action dials it again, and says so in the history.
    followup("retry", request_id, "--by", "ops-anna", check=True)
    record = wait_for(request_id, "placed")
    assert len(calls_for(sim, request_id)) == 2
    manual = [h for h in record.history if h.event == "manual retry"]
    assert manual and "ops-anna" in (manual[0].detail or "")


def test_kill_9_before_sending_places_exactly_once_after_restart(
    private_queue: str, start_worker: Any, sim: Any, store: Any, wait_for: Any, wait_event: Any
) -> None:
    """A claim lost before sending costs nothing, even with a single attempt allowed."""
    sim.set_faults(token_latency_s=1.0)  # a fresh worker's first token fetch is slow
    roomy = {
        "FOLLOWUP_HTTP_TIMEOUT_S": "2",  # 1 s < timeout
        "FOLLOWUP_CLAIM_LEASE_S": "9",
        "FOLLOWUP_MAX_ATTEMPTS": "1",
    }
    first = start_worker(FOLLOWUP_QUEUE=private_queue, **roomy)
    request_id = enqueue_follow_up(
        contact_id=unique(), user_id="u-1001", phone_number="+61298765432", queue=private_queue
    )
    wait_for(request_id, "dialing")  # claimed, waiting for its token, nothing sent
    first.kill()
    sim.set_faults()

    start_worker(FOLLOWUP_QUEUE=private_queue, **roomy)
    record = wait_for(request_id, "placed", timeout_s=9 + 10)

    assert len(calls_for(sim, request_id)) == 1
    events = [h.event for h in record.history]
    assert "claim expired before sending" in events
    assert events.count("sending") == 1
    assert record.attempts == 1


def test_a_reserved_message_whose_worker_died_is_placed_by_the_sweeper(
    private_queue: str, start_worker: Any, sim: Any, wait_for: Any, redis_url: str
) -> None:
    request_id = enqueue_follow_up(
        contact_id=unique(), user_id="u-1001", phone_number="+61298765432", queue=private_queue
    )
    # A consumer takes the message without acking, then dies: the message now sits in
    # kombu's unacked set until the visibility timeout (an hour by default).
    grab = (
        "import os, signal, sys\n"
        "from kombu import Connection\n"
        "with Connection(sys.argv[1]) as conn:\n"
        "    q = conn.SimpleQueue(sys.argv[2], no_ack=False)\n"
        "    q.get(timeout=10)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    died = subprocess.run(
        [sys.executable, "-c", grab, redis_url, private_queue], timeout=60, capture_output=True
    )
    assert died.returncode == -9

    start_worker(FOLLOWUP_QUEUE=private_queue)
    record = wait_for(request_id, "placed", timeout_s=30)  # FOLLOWUP_REDELIVER_AFTER_S is 5
    assert len(calls_for(sim, request_id)) == 1
    assert record.attempts == 1


def test_the_same_message_delivered_twice_at_once_to_two_workers_calls_once(
    private_queue: str, start_worker: Any, sim: Any, store: Any, wait_for: Any, client: Any
) -> None:
    start_worker(FOLLOWUP_QUEUE=private_queue)
    start_worker(FOLLOWUP_QUEUE=private_queue)
    contacts = [unique() for _ in range(10)]
    sim.set_faults(call_latency_s=0.3)
    ids = []
    for contact in contacts:
        request_id = uuid.uuid4().hex
        message = {"contact_id": contact, "user_id": "u-1001", "phone_number": "+61298765432"}
        publish(client.app, request_id, message, private_queue)  # as another service would, twice
        publish(client.app, request_id, message, private_queue)
        ids.append(request_id)

    for request_id in ids:
        wait_for(request_id, "placed")
    sim.set_faults()
    for request_id in ids:
        assert len(calls_for(sim, request_id)) == 1
    duplicates = [
        h for i in ids for h in store.get(i).history if h.event == "duplicate delivery ignored"
    ]
    assert len(duplicates) == len(ids)


def test_50_concurrent_enqueues_with_one_key_make_one_request_and_one_call(
    worker: Any, sim: Any, wait_for: Any
) -> None:
    request = {
        "contact_id": unique(),
        "user_id": "u-1002",
        "phone_number": "+61298765432",
        "idempotency_key": unique("crm"),
    }
    with ThreadPoolExecutor(max_workers=50) as pool:
        ids = set(pool.map(lambda _: enqueue_follow_up(**request), range(50)))

    assert len(ids) == 1
    request_id = ids.pop()
    wait_for(request_id, "placed")
    time.sleep(0.5)
    assert len(calls_for(sim, request_id)) == 1

    with pytest.raises(IdempotencyConflict) as conflict:
        enqueue_follow_up(**{**request, "reason": "something else"})
    assert conflict.value.errors[0].field == "idempotency_key"
    assert request_id in str(conflict.value)


def test_cancel_stops_a_request_that_waits_for_its_next_attempt(
    private_queue: str, start_worker: Any, sim: Any, wait_for: Any, store: Any
) -> None:
    contact = unique()
    sim.set_faults(by_contact={contact: ["500"]})  # no Retry-After: this request's backoff only
    start_worker(
        FOLLOWUP_QUEUE=private_queue, FOLLOWUP_BACKOFF_BASE_S="60", FOLLOWUP_BACKOFF_MAX_S="60"
    )
    request_id = enqueue_follow_up(
        contact_id=contact, user_id="u-1001", phone_number="+61298765432", queue=private_queue
    )
    record = wait_for(request_id, "retrying")
    assert record.next_attempt_at is not None  # visibly pending, with its next attempt time

    done = followup("cancel", request_id)
    assert done.returncode == 0
    assert store.get(request_id).state == "cancelled"

    again = followup("cancel", request_id)
    assert again.returncode == 1
    assert "is cancelled" in again.stderr
    retry_placed = followup("retry", request_id)
    assert retry_placed.returncode == 1
    assert calls_for(sim, request_id) == []


def test_a_request_recorded_but_never_published_is_published_by_the_sweeper(
    worker: Any, sim: Any, wait_for: Any
) -> None:
    """The producer records, then cannot reach the broker: the request is not lost."""
    result = followup(
        "enqueue",
        "--contact-id",
        unique(),
        "--user-id",
        "u-1001",
        "--phone-number",
        "+61298765432",
        env={"FOLLOWUP_BROKER_URL": "redis://127.0.0.1:1/0"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "publish failed; the sweeper will publish" in result.stderr
    request_id = result.stdout.strip()

    record = wait_for(request_id, "placed", timeout_s=30)  # FOLLOWUP_REDELIVER_AFTER_S is 5
    assert len(calls_for(sim, request_id)) == 1
    assert record.history[0].event == "enqueued"


def test_sigterm_lets_the_call_in_flight_finish(
    private_queue: str, start_worker: Any, sim: Any, store: Any, wait_for: Any, wait_event: Any
) -> None:
    w = start_worker(
        FOLLOWUP_QUEUE=private_queue, FOLLOWUP_HTTP_TIMEOUT_S="3", FOLLOWUP_CLAIM_LEASE_S="13"
    )
    sim.set_faults(call_latency_s=0.8)
    request_id = enqueue_follow_up(
        contact_id=unique(), user_id="u-1001", phone_number="+61298765432", queue=private_queue
    )
    wait_event(request_id, "sending")
    w.stop()  # SIGTERM: Celery's warm shutdown waits for the task

    assert w.proc.returncode == 0
    record = wait_for(request_id, "placed", timeout_s=1)
    assert len(calls_for(sim, request_id)) == 1
    assert record.attempts == 1
