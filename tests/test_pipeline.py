"""The core pipeline over real parts: producer -> Redis -> Celery worker -> simulator -> store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from followup import InvalidRequest, enqueue_follow_up
from tests.conftest import (
    CLIENT_ID,
    NOSCOPE_ID,
    Fleet,
    calls_for,
    followup,
    foreign_client,
    requests_for,
    unique,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def foreign_app(redis_url: str) -> Celery:
    """Another service's Celery client: it knows only the task name, queue and JSON."""
    return foreign_client(redis_url)


def test_valid_request_places_exactly_one_call_with_the_contract_payload(
    worker: Any, sim: Any, wait_for: Any
) -> None:
    contact = unique()
    request_id = enqueue_follow_up(
        contact_id=contact, user_id="u-67890", phone_number="+61 2 9876 5432", reason="callback"
    )

    record = wait_for(request_id, "placed")

    calls = calls_for(sim, request_id)
    assert len(calls) == 1
    assert calls[0]["body"] == {
        "from": {"id": "u-67890", "address": "u-67890", "addressType": "user"},
        "to": [{"id": contact, "address": "+61298765432", "addressType": "phone"}],
        "type": "outbound",
        "media": "audio",
    }
    issued = sim.tokens()["tokens"]
    token = calls[0]["authorization"].removeprefix("Bearer ")
    assert issued[token] == CLIENT_ID
    assert record.conversation_id == calls[0]["id"]
    assert record.attempts == 1
    assert [h.state for h in record.history] == ["queued", "dialing", "dialing", "placed"]


def test_400_fails_with_the_error_body_kept_and_no_retry(
    worker: Any, sim: Any, wait_for: Any
) -> None:
    contact = unique()
    sim.set_faults(by_contact={contact: ["400"]})
    request_id = enqueue_follow_up(
        contact_id=contact, user_id="u-1001", phone_number="+61298765432"
    )

    record = wait_for(request_id, "failed")

    assert record.attempts == 1
    assert record.last_error.status == 400
    assert record.last_error.code == "bad.request"
    assert record.last_error.message == "Invalid request body"
    assert record.last_error.errors == [
        {"message": "Scripted 400 from the simulator", "code": "scripted"}
    ]
    assert record.last_error.context_id  # the platform's id for this error, for its support
    assert [r["status"] for r in requests_for(sim, request_id)] == [400]


def test_unknown_agent_404_fails_without_retry(worker: Any, sim: Any, wait_for: Any) -> None:
    request_id = enqueue_follow_up(
        contact_id=unique(), user_id="u-nobody", phone_number="+61298765432"
    )

    record = wait_for(request_id, "failed")

    assert record.last_error.status == 404
    assert "u-nobody" in record.last_error.message
    assert [r["status"] for r in requests_for(sim, request_id)] == [404]


def test_503_twice_then_200_is_placed_spending_no_attempt_on_the_503s(
    worker: Any, sim: Any, wait_for: Any
) -> None:
    contact = unique()
    sim.set_faults(by_contact={contact: ["503", "503"]}, retry_after="0")
    request_id = enqueue_follow_up(
        contact_id=contact, user_id="u-1001", phone_number="+61298765432"
    )

    record = wait_for(request_id, "placed")

    assert record.attempts == 1  # a 503 with Retry-After: the platform did nothing with it
    assert [r["status"] for r in requests_for(sim, request_id)] == [503, 503, 201]
    assert len(calls_for(sim, request_id)) == 1
    retries = [h for h in record.history if h.event == "will retry"]
    assert [h.attempt for h in retries] == [0, 0]
    assert all("503 service.unavailable" in (h.detail or "") for h in retries)


def test_transient_errors_give_up_after_max_attempts(worker: Any, sim: Any, wait_for: Any) -> None:
    contact = unique()
    sim.set_faults(by_contact={contact: ["502"] * 10})  # more failures than attempts
    request_id = enqueue_follow_up(
        contact_id=contact, user_id="u-1001", phone_number="+61298765432"
    )

    record = wait_for(request_id, "failed")

    assert record.attempts == 4  # FOLLOWUP_MAX_ATTEMPTS in conftest
    assert [r["status"] for r in requests_for(sim, request_id)] == [502] * 4
    assert record.history[-1].event == "gave up"
    assert "all 4 attempts spent" in (record.history[-1].detail or "")
    assert record.last_error.status == 502


def test_a_persons_retry_gets_a_fresh_budget_and_keeps_the_count_honest(
    worker: Any, sim: Any, wait_for: Any
) -> None:
    """`followup retry` after `failed`: FOLLOWUP_MAX_ATTEMPTS more attempts, and `attempts`
    counts every attempt made (the per-number cap and the history count them too)."""
    contact = unique()
    sim.set_faults(by_contact={contact: ["502"] * 6})  # four, then two more after the retry
    request_id = enqueue_follow_up(
        contact_id=contact, user_id="u-1001", phone_number="+61298765432"
    )
    assert wait_for(request_id, "failed").attempts == 4

    retried = followup("retry", request_id, "--by", "ops-anna")
    assert retried.returncode == 0, retried.stderr
    record = wait_for(request_id, "placed")

    assert [r["status"] for r in requests_for(sim, request_id)] == [502] * 6 + [201]
    assert record.attempts == 7
    manual = [h for h in record.history if h.event == "manual retry"]
    assert manual and "(4 attempts)" in (manual[0].detail or "")


def test_429_waits_at_least_retry_after(worker: Any, sim: Any, wait_for: Any) -> None:
    contact = unique()
    sim.set_faults(by_contact={contact: ["429"]}, retry_after="2")
    request_id = enqueue_follow_up(
        contact_id=contact, user_id="u-1001", phone_number="+61298765432"
    )

    record = wait_for(request_id, "placed")

    sent = requests_for(sim, request_id)
    assert record.attempts == 1  # the 429 spent none
    assert [r["status"] for r in sent] == [429, 201]
    assert sent[1]["at"] - sent[0]["at"] >= 2.0


def test_a_429_pauses_every_worker_without_spending_attempts(
    worker: Any, sim: Any, wait_for: Any, store: Any
) -> None:
    throttled, bystander = unique(), unique()
    sim.set_faults(by_contact={throttled: ["429"]}, retry_after="2")
    first = enqueue_follow_up(contact_id=throttled, user_id="u-1001", phone_number="+61298765432")
    wait_for(first, "retrying")

    second = enqueue_follow_up(contact_id=bystander, user_id="u-1001", phone_number="+61298765433")
    record = wait_for(second, "placed")

    pause_began = requests_for(sim, first)[0]["at"]
    assert requests_for(sim, second)[0]["at"] >= pause_began + 2.0
    assert "waiting for api_pause" in [h.event for h in record.history]
    assert "scheduled" in [h.state for h in record.history]
    assert record.attempts == 1  # waiting for the pause spent no attempt
    assert wait_for(first, "placed").attempts == 1


def test_401_once_fetches_a_new_token_and_places(worker: Any, sim: Any, wait_for: Any) -> None:
    warm = enqueue_follow_up(contact_id=unique(), user_id="u-1001", phone_number="+61298765432")
    wait_for(warm, "placed")  # the worker now holds a cached token
    token_requests = sim.tokens()["token_requests"]
    sim.expire_tokens()  # ... which the platform now refuses with 401

    request_id = enqueue_follow_up(
        contact_id=unique(), user_id="u-1001", phone_number="+61298765432"
    )
    record = wait_for(request_id, "placed")

    assert [r["status"] for r in requests_for(sim, request_id)] == [401, 201]
    assert sim.tokens()["token_requests"] == token_requests + 1
    new_token = calls_for(sim, request_id)[0]["authorization"].removeprefix("Bearer ")
    assert new_token in sim.tokens()["tokens"]
    assert record.attempts == 1


def test_403_fails_naming_the_missing_scope(
    start_worker: Any, private_queue: str, sim: Any, wait_for: Any
) -> None:
    start_worker(FOLLOWUP_QUEUE=private_queue, FOLLOWUP_CLIENT_ID=NOSCOPE_ID)
    request_id = enqueue_follow_up(
        contact_id=unique(), user_id="u-1001", phone_number="+61298765432", queue=private_queue
    )
    record = wait_for(request_id, "failed")
    assert record.last_error.status == 403
    assert "conversation:write" in record.last_error.message
    assert "FOLLOWUP_CLIENT_ID" in record.last_error.message
    assert calls_for(sim, request_id) == []


def test_invalid_phone_is_rejected_at_enqueue_and_nothing_is_recorded(store: Any) -> None:
    before = store.counts()
    with pytest.raises(InvalidRequest) as caught:
        enqueue_follow_up(contact_id="c-12345", user_id="u-67890", phone_number="+612987")
    assert [e.field for e in caught.value.errors] == ["phone_number"]
    assert "not a valid E.164 number" in str(caught.value)
    assert "'+61**87'" in str(caught.value)  # masked, even in errors
    assert "'+612987'" not in str(caught.value)
    assert store.counts() == before


def test_cli_rejects_bad_input_with_exit_2_naming_the_field() -> None:
    result = followup(
        "enqueue", "--contact-id", "c-1", "--user-id", "u-1", "--phone-number", "+612987"
    )
    assert result.returncode == 2
    assert "phone_number" in result.stderr
    assert "E.164" in result.stderr

    missing = followup("enqueue", "--contact-id", "c-1")
    assert missing.returncode == 2
    assert "user_id: is required" in missing.stderr
    assert "phone_number: is required" in missing.stderr


def test_raw_malformed_messages_are_recorded_and_the_worker_keeps_serving(
    fleet: Fleet, sim: Any, wait_for: Any
) -> None:
    fleet.start_worker()
    foreign_app, queue_name = foreign_client(fleet.env["FOLLOWUP_BROKER_URL"]), fleet.queue
    seed_payload = foreign_app.send_task(
        "followup.place_call",
        queue=queue_name,
        kwargs={
            "request": {
                "contactId": "c-12345",
                "userId": "u-67890",
                "callType": "PERSONAL_CONNECTION",
                "phoneNumber": "+61298765432",
            }
        },
    )
    wrong_envelope = foreign_app.send_task("followup.place_call", args=[1, 2], queue=queue_name)
    not_an_object = foreign_app.send_task(
        "followup.place_call", kwargs={"request": "call them"}, queue=queue_name
    )
    good = foreign_app.send_task(
        "followup.place_call",
        queue=queue_name,
        kwargs={
            "request": {"contact_id": unique(), "user_id": "u-1001", "phone_number": "+61298765432"}
        },
    )

    rejected = wait_for(seed_payload.id, "rejected")
    fields = {e["field"] for e in rejected.last_error.errors}
    assert {"callType", "contact_id", "user_id", "phone_number"} <= fields
    assert "allowed fields are contact_id, user_id" in rejected.last_error.message
    assert "+61298765432" not in rejected.model_dump_json()
    assert wait_for(wrong_envelope.id, "rejected").last_error.errors[0]["field"] == "message"
    assert wait_for(not_an_object.id, "rejected").last_error.errors[0]["field"] == "request"
    placed = wait_for(good.id, "placed")  # request id = the sender's Celery task id
    assert len(calls_for(sim, placed.request_id)) == 1


def test_send_task_honours_the_idempotency_key(
    worker: Any, foreign_app: Celery, queue_name: str, sim: Any, wait_for: Any, store: Any
) -> None:
    request = {
        "contact_id": unique(),
        "user_id": "u-1001",
        "phone_number": "+61298765432",
        "idempotency_key": unique("ticket"),
    }
    first = foreign_app.send_task(
        "followup.place_call", kwargs={"request": request}, queue=queue_name
    )
    wait_for(first.id, "placed")
    second = foreign_app.send_task(
        "followup.place_call", kwargs={"request": request}, queue=queue_name
    )

    record = wait_for(second.id, "placed")  # the duplicate's id leads to the first request
    assert record.request_id == first.id
    assert len(calls_for(sim, first.id)) == 1
    assert calls_for(sim, second.id) == []
    assert enqueue_follow_up(**request) == first.id
    events = [h.event for h in store.get(first.id).history]
    assert "duplicate ignored" in events


def test_cli_enqueue_status_list_and_schema(worker: Any, wait_for: Any) -> None:
    contact = unique()
    out = followup(
        "enqueue",
        "--contact-id",
        contact,
        "--user-id",
        "u-1002",
        "--phone-number",
        "+442079460958",
        "--metadata",
        "ticket=T-1",
        "--json",
        check=True,
    )
    import json

    request_id = json.loads(out.stdout)["request_id"]
    wait_for(request_id, "placed")

    status = json.loads(followup("status", request_id, "--json", check=True).stdout)
    assert {
        "request_id",
        "state",
        "attempts",
        "conversation_id",
        "last_error",
        "created_at",
        "updated_at",
        "history",
    } <= set(status)
    assert status["state"] == "placed"
    assert status["phone_number"] == "+44********58"
    assert status["history"][-1]["event"] == "placed"

    listed = followup("list", "--state", "placed", "--limit", "500", check=True).stdout
    assert request_id in listed
    schema = json.loads(followup("schema", check=True).stdout)
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"contact_id", "user_id", "phone_number"}

    missing = followup("status", "no-such-id")
    assert missing.returncode == 1
    assert "no request with id no-such-id" in missing.stderr


def test_logs_never_show_phone_numbers_secrets_or_tokens(
    worker: Any, sim: Any, wait_for: Any
) -> None:
    sim.expire_tokens()  # force a token fetch and a 401 during this test
    request_id = enqueue_follow_up(
        contact_id=unique(), user_id="u-1002", phone_number="+61298765499"
    )
    wait_for(request_id, "placed")

    log = worker.log()  # the worker runs at DEBUG
    assert request_id in log
    assert "98765499" not in log
    assert "test-secret-7f3a9c" not in log
    for token in sim.tokens()["tokens"]:
        assert token not in log


def test_cli_batch_from_a_file(
    worker: Any, sim: Any, wait_for: Any, tmp_path: Path, store: Any
) -> None:
    import json

    good = [
        {"contact_id": unique(), "user_id": "u-1001", "phone_number": "+61298765432"}
        for _ in range(3)
    ]
    path = tmp_path / "batch.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in good) + "\n")
    out = followup("enqueue", "--file", str(path), check=True)
    ids = out.stdout.split()
    assert len(ids) == 3
    for request_id in ids:
        wait_for(request_id, "placed")
        assert len(calls_for(sim, request_id)) == 1

    before = store.counts()
    bad = [*good[:1], {**good[1], "phone_number": "+612987"}, {"contact_id": "c-1"}]
    path.write_text(json.dumps(bad))
    refused = followup("enqueue", "--file", str(path))
    assert refused.returncode == 2
    assert "line 1, item 2: phone_number" in refused.stderr
    assert "line 1, item 3: user_id: is required" in refused.stderr
    assert store.counts() == before  # one invalid request enqueues none


def test_a_key_conflict_in_a_batch_still_enqueues_the_rest(worker: Any, wait_for: Any) -> None:
    from followup import IdempotencyConflict, enqueue_many

    key = unique("key")
    first = {
        "contact_id": unique(),
        "user_id": "u-1001",
        "phone_number": "+61298765432",
        "idempotency_key": key,
    }
    other = {"contact_id": unique(), "user_id": "u-1001", "phone_number": "+61298765433"}
    with pytest.raises(IdempotencyConflict) as conflict:
        enqueue_many([first, other, {**first, "reason": "different"}])

    assert conflict.value.errors[0].field == "idempotency_key"
    assert len(conflict.value.enqueued) == 2
    for request_id in conflict.value.enqueued:
        wait_for(request_id, "placed")
