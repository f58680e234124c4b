"""Never call twice, never lose a request: kills, redeliveries and races over real parts,
over each broker (Redis, and RabbitMQ with a quorum queue; see conftest's `broker`)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from followup import IdempotencyConflict
from followup.cli.local_stack import wait_until
from followup.tasks.publish import publish
from tests.conftest import Fleet, calls_for, unique

pytestmark = pytest.mark.integration

PHONE = "+61298765432"


def test_kill_9_while_the_platform_holds_the_call_never_redials(
    fleet: Fleet, sim: Any, store: Any, wait_for: Any, wait_event: Any
) -> None:
    contact = unique()
    sim.set_faults(by_contact={contact: ["hang"]}, hang_s=20)
    # A 5 s read timeout leaves time to kill the worker while its request is in flight, even
    # on a loaded machine; the lease must be longer than four of them.
    slow = {"FOLLOWUP_HTTP_TIMEOUT_S": "5", "FOLLOWUP_CLAIM_LEASE_S": "21"}
    first = fleet.start_worker(**slow)
    request_id = fleet.enqueue(contact_id=contact, user_id="u-1001", phone_number=PHONE)
    wait_until(lambda: calls_for(sim, request_id), 10, "the platform to hold the call")
    first.kill()  # the POST has left; the platform has the call and has not answered

    fleet.start_worker(**slow)
    record = wait_for(request_id, "unknown", timeout_s=21 + 15)

    assert len(calls_for(sim, request_id)) == 1
    assert "claim expired after sending" in [h.event for h in record.history]
    assert record.last_error.code == "outcome.unknown"
    time.sleep(2)  # the sweeper keeps running; nothing may dial it again by itself
    assert len(calls_for(sim, request_id)) == 1
    assert store.get(request_id).state == "unknown"

    # The explicit human action dials it again, and says so in the history.
    assert fleet.followup("retry", request_id, "--by", "ops-anna").returncode == 0
    record = wait_for(request_id, "placed")
    assert len(calls_for(sim, request_id)) == 2
    manual = [h for h in record.history if h.event == "manual retry"]
    assert manual and "ops-anna" in (manual[0].detail or "")


def test_kill_9_before_sending_places_exactly_once_after_restart(
    fleet: Fleet, sim: Any, store: Any, wait_for: Any, wait_event: Any
) -> None:
    """A claim lost before sending costs nothing, even with a single attempt allowed."""
    # A fresh worker's first token fetch is slow: 4.5 s to kill it in, even on a loaded machine.
    sim.set_faults(token_latency_s=4.5)
    roomy = {
        "FOLLOWUP_HTTP_TIMEOUT_S": "5",  # the token fetch fits within it
        "FOLLOWUP_CLAIM_LEASE_S": "21",  # longer than four timeouts
        "FOLLOWUP_MAX_ATTEMPTS": "1",
    }
    first = fleet.start_worker(**roomy)
    request_id = fleet.enqueue(contact_id=unique(), user_id="u-1001", phone_number=PHONE)
    wait_for(request_id, "dialing")  # claimed, waiting for its token, nothing sent
    first.kill()
    sim.set_faults()

    fleet.start_worker(**roomy)
    record = wait_for(request_id, "placed", timeout_s=21 + 15)

    assert len(calls_for(sim, request_id)) == 1
    events = [h.event for h in record.history]
    assert "claim expired before sending" in events
    assert events.count("sending") == 1
    assert record.attempts == 1


def test_a_reserved_message_whose_consumer_died_is_placed_once(
    fleet: Fleet, sim: Any, wait_for: Any
) -> None:
    """Over Redis the message sits in kombu's unacked set until the visibility timeout (an
    hour by default) and the sweeper publishes it again; over RabbitMQ it comes straight back
    when the consumer's connection dies."""
    request_id = fleet.enqueue(contact_id=unique(), user_id="u-1001", phone_number=PHONE)
    grab = (  # a consumer takes the message without acking, then dies
        "import os, signal\n"
        "from followup.config.celery import create_app\n"
        "from followup.config.settings import load_settings\n"
        "app = create_app(load_settings())\n"
        "with app.connection_for_read() as conn:\n"
        "    q = conn.SimpleQueue(app.amqp.queues[app.conf.task_default_queue], no_ack=False)\n"
        "    q.get(timeout=10)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    died = subprocess.run(
        [sys.executable, "-c", grab], env=fleet.process_env(), timeout=60, capture_output=True
    )
    assert died.returncode == -9, died.stderr

    fleet.start_worker()
    record = wait_for(request_id, "placed", timeout_s=30)  # FOLLOWUP_REDELIVER_AFTER_S is 5
    assert len(calls_for(sim, request_id)) == 1
    assert record.attempts == 1


def test_the_same_message_delivered_twice_at_once_to_two_workers_calls_once(
    fleet: Fleet, sim: Any, store: Any, wait_for: Any
) -> None:
    fleet.start_worker()
    fleet.start_worker()
    contacts = [unique() for _ in range(10)]
    sim.set_faults(call_latency_s=0.3)
    ids = []
    for contact in contacts:
        request_id = uuid.uuid4().hex
        message = {"contact_id": contact, "user_id": "u-1001", "phone_number": PHONE}
        for _ in range(2):  # as another service would, twice
            publish(fleet.client.app, request_id, message, fleet.queue)
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
    fleet: Fleet, sim: Any, wait_for: Any
) -> None:
    fleet.start_worker()
    request = {
        "contact_id": unique(),
        "user_id": "u-1002",
        "phone_number": PHONE,
        "idempotency_key": unique("crm"),
    }
    with ThreadPoolExecutor(max_workers=50) as pool:
        ids = set(pool.map(lambda _: fleet.enqueue(**request), range(50)))

    assert len(ids) == 1
    request_id = ids.pop()
    wait_for(request_id, "placed")
    time.sleep(0.5)
    assert len(calls_for(sim, request_id)) == 1

    with pytest.raises(IdempotencyConflict) as conflict:
        fleet.enqueue(**{**request, "reason": "something else"})
    assert conflict.value.errors[0].field == "idempotency_key"
    assert request_id in str(conflict.value)


def test_cancel_stops_a_request_that_waits_for_its_next_attempt(
    fleet: Fleet, sim: Any, wait_for: Any, store: Any
) -> None:
    contact = unique()
    sim.set_faults(by_contact={contact: ["500"]})  # no Retry-After: this request's backoff only
    fleet.start_worker(FOLLOWUP_BACKOFF_BASE_S="60", FOLLOWUP_BACKOFF_MAX_S="60")
    request_id = fleet.enqueue(contact_id=contact, user_id="u-1001", phone_number=PHONE)
    record = wait_for(request_id, "retrying")
    assert record.next_attempt_at is not None  # visibly pending, with its next attempt time

    done = fleet.followup("cancel", request_id)
    assert done.returncode == 0
    assert store.get(request_id).state == "cancelled"

    again = fleet.followup("cancel", request_id)
    assert again.returncode == 1
    assert "is cancelled" in again.stderr
    retry_placed = fleet.followup("retry", request_id)
    assert retry_placed.returncode == 1
    assert calls_for(sim, request_id) == []


def test_a_request_recorded_but_never_published_is_published_by_the_sweeper(
    fleet: Fleet, sim: Any, wait_for: Any
) -> None:
    """The producer records, then cannot reach the broker: the request is not lost."""
    fleet.start_worker()
    unreachable = (
        "amqp://guest:guest@127.0.0.1:1//" if fleet.on_rabbitmq else "redis://127.0.0.1:1/0"
    )
    result = fleet.followup(
        "enqueue",
        "--contact-id",
        unique(),
        "--user-id",
        "u-1001",
        "--phone-number",
        PHONE,
        FOLLOWUP_BROKER_URL=unreachable,
    )
    assert result.returncode == 0, result.stderr
    assert "the request is recorded (queued) and the sweeper will publish it" in result.stderr
    assert "Traceback" not in result.stderr
    request_id = result.stdout.strip()

    record = wait_for(request_id, "placed", timeout_s=30)  # FOLLOWUP_REDELIVER_AFTER_S is 5
    assert len(calls_for(sim, request_id)) == 1
    assert record.history[0].event == "enqueued"


def test_sigterm_lets_the_call_in_flight_finish(
    fleet: Fleet, sim: Any, store: Any, wait_for: Any, wait_event: Any
) -> None:
    w = fleet.start_worker(FOLLOWUP_HTTP_TIMEOUT_S="3", FOLLOWUP_CLAIM_LEASE_S="13")
    sim.set_faults(call_latency_s=0.8)
    request_id = fleet.enqueue(contact_id=unique(), user_id="u-1001", phone_number=PHONE)
    wait_event(request_id, "sending")
    w.stop()  # SIGTERM: Celery's warm shutdown waits for the task

    assert w.proc.returncode == 0
    record = wait_for(request_id, "placed", timeout_s=1)
    assert len(calls_for(sim, request_id)) == 1
    assert record.attempts == 1
