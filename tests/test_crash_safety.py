"""Never call twice, never lose a request: kills, redeliveries and races over real parts."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from cli.local_stack import Worker
from tasks import IdempotencyConflict, enqueue_follow_up
from tasks.publish import publish
from tests.conftest import calls_for, followup, unique

pytestmark = pytest.mark.integration


@pytest.fixture
def private_queue(worker_env: dict[str, str], log_dir: Path) -> Iterator[Any]:
    """A queue of this test's own, and a way to start (and kill) workers on it."""
    queue = f"{worker_env['FOLLOWUP_QUEUE']}-{uuid.uuid4().hex[:6]}"
    started: list[Worker] = []

    class Queue:
        name = queue

        def start_worker(self, **env: str) -> Worker:
            w = Worker(
                {**worker_env, "FOLLOWUP_QUEUE": queue, **env},
                name=f"{queue}-{len(started)}",
                log_dir=log_dir,
            )
            started.append(w)
            return w

    yield Queue()
    for w in started:
        if w.proc.poll() is None:
            w.stop()


def wait_event(store: Any, request_id: str, event: str, timeout_s: float = 10) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        record = store.get(request_id)
        if record and any(h.event == event for h in record.history):
            return record
        time.sleep(0.01)
    raise AssertionError(f"no '{event}' for {request_id} within {timeout_s}s")


def test_kill_9_while_the_platform_holds_the_call_never_redials(
    private_queue: Any, sim: Any, store: Any, wait_for: Any
) -> None:
    contact = unique()
    sim.set_faults(by_contact={contact: ["hang"]}, hang_s=20)
    # A 2 s read timeout leaves time to kill the worker while its request is in flight.
    slow = {"FOLLOWUP_HTTP_TIMEOUT_S": "2", "FOLLOWUP_CLAIM_LEASE_S": "9"}
    first = private_queue.start_worker(**slow)
    request_id = enqueue_follow_up(
        contact_id=contact, user_id="u-1001", phone_number="+61298765432", queue=private_queue.name
    )
    wait_event(store, request_id, "sending")
    first.kill()  # the POST has left; the platform has the call and has not answered

    private_queue.start_worker(**slow)
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
    private_queue: Any, sim: Any, store: Any, wait_for: Any
) -> None:
    sim.set_faults(token_latency_s=1.0)  # a fresh worker's first token fetch is slow
    roomy = {"FOLLOWUP_HTTP_TIMEOUT_S": "2", "FOLLOWUP_CLAIM_LEASE_S": "9"}  # 1 s < timeout
    first = private_queue.start_worker(**roomy)
    request_id = enqueue_follow_up(
        contact_id=unique(), user_id="u-1001", phone_number="+61298765432", queue=private_queue.name
    )
    wait_for(request_id, "dialing")  # claimed, waiting for its token, nothing sent
    first.kill()
    sim.set_faults()

    private_queue.start_worker(**roomy)
    record = wait_for(request_id, "placed", timeout_s=9 + 10)

    assert len(calls_for(sim, request_id)) == 1
    events = [h.event for h in record.history]
    assert "claim expired before sending" in events
    assert events.count("sending") == 1


def test_a_reserved_message_whose_worker_died_is_placed_by_the_sweeper(
    private_queue: Any, sim: Any, wait_for: Any, redis_url: str
) -> None:
    request_id = enqueue_follow_up(
        contact_id=unique(), user_id="u-1001", phone_number="+61298765432", queue=private_queue.name
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
        [sys.executable, "-c", grab, redis_url, private_queue.name], timeout=60, capture_output=True
    )
    assert died.returncode == -9

    private_queue.start_worker()
    record = wait_for(request_id, "placed", timeout_s=30)  # FOLLOWUP_REDELIVER_AFTER_S is 5
    assert len(calls_for(sim, request_id)) == 1
    assert record.attempts == 1


def test_the_same_message_delivered_twice_at_once_to_two_workers_calls_once(
    private_queue: Any, sim: Any, store: Any, wait_for: Any
) -> None:
    private_queue.start_worker()
    private_queue.start_worker()
    contacts = [unique() for _ in range(10)]
    sim.set_faults(call_latency_s=0.3)
    ids = []
    for contact in contacts:
        request_id = uuid.uuid4().hex
        message = {"contact_id": contact, "user_id": "u-1001", "phone_number": "+61298765432"}
        publish(request_id, message, private_queue.name)  # as another service would, twice
        publish(request_id, message, private_queue.name)
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
    private_queue: Any, sim: Any, wait_for: Any, store: Any
) -> None:
    contact = unique()
    sim.set_faults(by_contact={contact: ["500"]})  # no Retry-After: this request's backoff only
    private_queue.start_worker(FOLLOWUP_BACKOFF_BASE_S="60", FOLLOWUP_BACKOFF_MAX_S="60")
    request_id = enqueue_follow_up(
        contact_id=contact, user_id="u-1001", phone_number="+61298765432", queue=private_queue.name
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


def test_a_message_that_arrives_while_the_status_store_is_down_is_not_lost(
    worker_env: dict[str, str], log_dir: Path, sim: Any, redis_url: str
) -> None:
    from celery import Celery

    from cli.local_stack import PrivateRedis, Worker
    from worker.store import StatusStore

    store_redis = PrivateRedis()  # the status store on its own server; the broker stays up
    queue = f"{worker_env['FOLLOWUP_QUEUE']}-outage"
    env = {
        **worker_env,
        "FOLLOWUP_REDIS_URL": store_redis.url,
        "FOLLOWUP_BROKER_URL": redis_url,
        "FOLLOWUP_QUEUE": queue,
    }
    w = Worker(env, name="outage", log_dir=log_dir)
    try:
        store_redis.proc.kill()
        store_redis.proc.wait(10)
        crm = Celery("crm", broker=redis_url, set_as_current=False)
        sent = crm.send_task(
            "followup.place_call",
            queue=queue,
            kwargs={
                "request": {
                    "contact_id": unique(),
                    "user_id": "u-1001",
                    "phone_number": "+61298765432",
                }
            },
        )
        deadline = time.monotonic() + 10
        while "status store unreachable" not in w.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "status store unreachable" in w.log()

        store_redis.restart()
        import redis

        store = StatusStore(
            redis.Redis.from_url(store_redis.url, decode_responses=True),
            env["FOLLOWUP_NAMESPACE"],
            idempotency_ttl_s=60,
            record_ttl_s=60,
            redeliver_after_s=5,
        )
        deadline = time.monotonic() + 30
        record = None
        while time.monotonic() < deadline:
            record = store.get(sent.id)
            if record and record.state == "placed":
                break
            time.sleep(0.1)
        assert record is not None and record.state == "placed"
        assert len(calls_for(sim, sent.id)) == 1
    finally:
        w.stop()
        store_redis.stop()


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
    private_queue: Any, sim: Any, store: Any, wait_for: Any
) -> None:
    w = private_queue.start_worker(FOLLOWUP_HTTP_TIMEOUT_S="3", FOLLOWUP_CLAIM_LEASE_S="13")
    sim.set_faults(call_latency_s=0.8)
    request_id = enqueue_follow_up(
        contact_id=unique(), user_id="u-1001", phone_number="+61298765432", queue=private_queue.name
    )
    wait_event(store, request_id, "sending")
    w.stop()  # SIGTERM: Celery's warm shutdown waits for the task

    assert w.proc.returncode == 0
    record = wait_for(request_id, "placed", timeout_s=1)
    assert len(calls_for(sim, request_id)) == 1
    assert record.attempts == 1
