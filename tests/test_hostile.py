"""A hostile or broken producer, played for real: hand-built messages through the real broker
(Redis, and RabbitMQ) to a real worker. No single message may get a customer called twice,
stop a worker, write outside its own record, or run anything but followup.place_call
(issue 26; docs/security.md)."""

from __future__ import annotations

import json
import socket
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kombu import Connection

from followup.cli.local_stack import Worker, wait_until
from followup.config.celery import TASK_NAME
from followup.worker.records import StatusRecord
from tests.conftest import Fleet, calls_for, foreign_client, requests_for, unique

pytestmark = pytest.mark.integration

NUMBER = "+61298765432"
EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def request(**overrides: Any) -> dict[str, Any]:
    return {"contact_id": unique(), "user_id": "u-1001", "phone_number": NUMBER, **overrides}


def send_raw(
    fleet: Fleet,
    task_id: Any,
    *,
    task: Any = TASK_NAME,
    args: Any = (),
    kwargs: Any = None,
    embed: Any = None,
    body: str | None = None,
    content_type: str = "application/json",
    **headers: Any,
) -> None:
    """One task message as a sender may build it by hand: any header, any body."""
    all_headers = {
        "lang": "py",
        "task": task,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": "()",
        "kwargsrepr": "{}",
        "origin": "hostile@test",
        "ignore_result": True,
        **headers,
    }
    if body is None:
        body = json.dumps([list(args), kwargs or {}, EMBED if embed is None else embed])
    with Connection(fleet.env["FOLLOWUP_BROKER_URL"]) as connection:
        connection.Producer().publish(
            body,
            exchange=fleet.queue if fleet.on_rabbitmq else "",
            routing_key=fleet.queue,
            headers=all_headers,
            content_type=content_type,
            content_encoding="utf-8",
            retry=True,
        )


def dead_letters(fleet: Fleet) -> int:
    return fleet.client.store.dead_letters(0)[0]


def wait_dead_letters(fleet: Fleet, count: int) -> None:
    wait_until(lambda: dead_letters(fleet) >= count, 60, f"{count} dead letters")


def hostname(worker: Worker) -> str:
    return f"{worker.name}@{socket.gethostname()}"


def still_serves(fleet: Fleet, worker: Worker, sim: Any, wait_for: Any) -> StatusRecord:
    """A good message after the hostile ones is placed, once, by the same worker process."""
    good = foreign_client(fleet.env["FOLLOWUP_BROKER_URL"]).send_task(
        TASK_NAME, queue=fleet.queue, kwargs={"request": request()}
    )
    record = wait_for(good.id, "placed", timeout_s=60)
    assert len(calls_for(sim, good.id)) == 1
    assert worker.proc.poll() is None
    return record


def test_ids_that_are_not_request_ids_are_dead_letters_and_never_dialled(
    fleet: Fleet, sim: Any, wait_for: Any
) -> None:
    """Issue 26.1, 26.2, 26.9: an empty or missing id (Celery would mint a new one at every
    republish), a list, a dict, kombu's uuid and datetime markers, an int, non-ASCII, 10 KB,
    and a terminal escape: each a dead letter with a count; nothing recorded or dialled."""
    worker = fleet.start_worker(FOLLOWUP_REDELIVER_AFTER_S="3")
    before = dead_letters(fleet)
    soon = (datetime.now(UTC) + timedelta(seconds=4)).isoformat()
    contact = unique()
    poison: list[Any] = [
        "",
        None,
        ["a", "b"],
        {"k": "v"},
        {"__type__": "uuid", "__value__": "x"},
        {"__type__": "datetime", "__value__": "2026-01-01T00:00:00"},
        12345,
        "café-1",
        "x" * 10240,
        "id-\x1b]0;pwned\x07",
    ]
    for task_id in poison:
        send_raw(
            fleet,
            task_id,
            kwargs={"request": request(contact_id=contact, not_before=soon)},
        )
    wait_dead_letters(fleet, before + len(poison))

    still_serves(fleet, worker, sim, wait_for)
    assert fleet.client.store.get("") is None
    assert fleet.client.store.get("café-1") is None
    assert [c for c in sim.calls() if c["body"]["to"][0]["id"] == contact] == []
    _, newest = fleet.client.store.dead_letters(len(poison))
    assert all("request_id" in entry["reason"] for entry in newest)
    log = worker.log()
    assert "Unrecoverable error" not in log
    assert "status store unavailable" not in log
    assert "\x1b" not in log
    assert NUMBER not in log


def test_foreign_tasks_and_anything_to_run_after_are_refused_and_recorded(
    fleet: Fleet, sim: Any, wait_for: Any
) -> None:
    """Issue 26.4: celery.map, celery.accumulate, a chain, a callback, an errback, a chord:
    refused, kept as `rejected`, never run; the worker publishes nothing."""
    worker = fleet.start_worker()
    crm = foreign_client(fleet.env["FOLLOWUP_BROKER_URL"])
    child = request()
    place = {
        "task": TASK_NAME,
        "args": [],
        "kwargs": {"request": child},
        "options": {"queue": fleet.queue},
        "subtask_type": None,
        "immutable": False,
    }
    refused = {
        "map": crm.send_task("celery.map", args=[place, [[child]]], queue=fleet.queue).id,
        "accumulate": crm.send_task("celery.accumulate", args=[1, 2], queue=fleet.queue).id,
        "link": crm.send_task(
            TASK_NAME,
            kwargs={"request": request()},
            queue=fleet.queue,
            link=crm.signature("celery.accumulate", args=(1,)),
        ).id,
    }
    for name, embed in (
        ("chain", {**EMBED, "chain": [place]}),
        ("errbacks", {**EMBED, "errbacks": [place]}),
        ("chord", {**EMBED, "chord": place}),
    ):
        refused[name] = uuid.uuid4().hex
        send_raw(fleet, refused[name], kwargs={"request": request()}, embed=embed)

    for name, task_id in refused.items():
        record = wait_for(task_id, "rejected", timeout_s=60)
        assert record.last_error is not None
        expected = "message.task" if name in ("map", "accumulate") else "message.embedded"
        assert record.last_error.code == expected, name
        assert requests_for(sim, task_id) == []
    still_serves(fleet, worker, sim, wait_for)
    assert [c for c in sim.calls() if c["body"]["to"][0]["id"] == child["contact_id"]] == []
    assert "celery.map" not in worker.log().replace("'celery.map'", "")


def test_unreadable_bodies_are_rejected_with_a_bounded_masked_excerpt(
    fleet: Fleet, sim: Any, wait_for: Any
) -> None:
    """Issue 26.2, 26.7: another content type, deep JSON, a kombu marker in the body, 100 KB of
    reason, a number as an unknown field's name, a metadata key and a time zone: `rejected`,
    with a bounded excerpt; no personal data in the record or the worker's log."""
    worker = fleet.start_worker()
    secret = "diabetes, card 4111 1111 1111 1111"
    cases = {
        "content_type": dict(body=json.dumps([[], {}, EMBED]), content_type="text/plain"),
        "deep": dict(body="[" * 5000 + "]" * 5000),
        "marker": dict(
            kwargs={"request": request(contact_id={"__type__": "uuid", "__value__": "x"})}
        ),
        "huge": dict(kwargs={"request": request(reason=secret + "x" * 100_000)}),
        "fields": dict(
            kwargs={
                "request": request(
                    reason=secret,
                    timezone="+61298765499",
                    metadata={"+61298765498": "x", "nested": {"diagnosis": secret}},
                    **{"+61298765497": secret},
                )
            }
        ),
        "unregistered": dict(task="crm.unknown", kwargs={"request": request(reason=secret)}),
    }
    ids = {name: uuid.uuid4().hex for name in cases}
    for name, fields in cases.items():
        send_raw(fleet, ids[name], **fields)  # type: ignore[arg-type]

    for name, task_id in ids.items():
        record = wait_for(task_id, "rejected", timeout_s=60)
        shown = record.model_dump_json()
        assert len(shown) < 6000, name
        for personal in ("diabetes", "4111", "98765499", "98765498", "98765497", NUMBER):
            assert personal not in shown, (name, personal)
        raw = fleet.client.store.redis.hget(
            f"{fleet.client.settings.namespace}:req:{task_id}", "request"
        )
        assert raw is not None and len(raw) <= 2048
    fields = wait_for(ids["fields"], "rejected", timeout_s=60)
    errors = {e["field"] for e in fields.last_error.errors}
    assert {"timezone", "metadata"} <= errors
    assert any("*" in field for field in errors)  # the number as a field's name, masked
    still_serves(fleet, worker, sim, wait_for)
    log = worker.log()
    assert "diabetes" not in log and "4111" not in log


def test_the_routing_key_never_chooses_where_the_worker_writes(
    fleet: Fleet, sim: Any, wait_for: Any
) -> None:
    """Issue 26.3: a message whose routing key names another request's history is recorded
    for the worker's own queue, and republished there; the other request's record stays
    whole. A queue that could name a store key is refused at enqueue."""
    fleet.start_worker()
    store, ns = fleet.client.store, fleet.client.settings.namespace
    victim = fleet.enqueue(**request())
    wait_for(victim, "placed", timeout_s=60)
    history_before = len(store.get(victim).history)

    sent = _sent_with_routing_key(fleet, f"{ns}:hist:{victim}")
    record = wait_for(sent, "placed", timeout_s=60)
    assert record.queue == fleet.queue
    assert len(store.get(victim).history) == history_before
    assert store.redis.type(f"{ns}:hist:{victim}") == "list"
    assert fleet.followup("status", victim).returncode == 0

    counts = store.counts()
    refused = fleet.followup(
        "enqueue",
        *("--contact-id", "c-1", "--user-id", "u-1", "--phone-number", NUMBER),
        *("--queue", f"{ns}:outcomes"),
    )
    assert refused.returncode == 2
    assert "queue" in refused.stderr and "status-store key" in refused.stderr
    assert store.counts() == counts
    assert store.redis.type(f"{ns}:outcomes") in ("stream", "none")


def _sent_with_routing_key(fleet: Fleet, routing_key: str) -> str:
    """A request, due in 2 s (so the sweeper republishes it), in the fleet's queue with
    `routing_key` in its delivery info: on Redis an envelope pushed by hand (kombu would push
    it onto the list the key names), on RabbitMQ through a binding for every key."""
    task_id = uuid.uuid4().hex
    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    body = request(not_before=soon)
    if fleet.on_rabbitmq:
        with Connection(fleet.env["FOLLOWUP_BROKER_URL"]) as connection:
            connection.default_channel.queue_bind(fleet.queue, fleet.queue, routing_key="#")
        crm = foreign_client(fleet.env["FOLLOWUP_BROKER_URL"])
        crm.send_task(
            TASK_NAME,
            task_id=task_id,
            kwargs={"request": body},
            exchange=fleet.queue,
            routing_key=routing_key,
        )
        return task_id
    from followup.tasks.publish import RedisMessages

    store = fleet.client.store
    messages = RedisMessages(fleet.client.app, store.redis.connection_pool.connection_kwargs["db"])
    envelope = json.loads(messages.task_message(task_id, body, fleet.queue))
    envelope["properties"]["delivery_info"]["routing_key"] = routing_key
    store.redis.lpush(fleet.queue, json.dumps(envelope))
    return task_id


def test_celery_timing_headers_are_recorded_and_copies_do_not_grow_a_history(
    fleet: Fleet, sim: Any, wait_for: Any
) -> None:
    """Issue 26.9: a past `expires` and an `eta` in 2099 are `rejected` (not dropped, not held
    in memory); on a recorded request they are ignored; 300 copies of a placed request's
    message add one history entry, counted."""
    worker = fleet.start_worker()
    crm = foreign_client(fleet.env["FOLLOWUP_BROKER_URL"])
    # By hand: on RabbitMQ, Celery's own client sets a message TTL too, and the broker drops
    # the message before any worker sees it (docs/security.md).
    expired = uuid.uuid4().hex
    past = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    send_raw(fleet, expired, kwargs={"request": request()}, expires=past)
    far = uuid.uuid4().hex  # on RabbitMQ, Celery's client would have the broker hold it
    send_raw(fleet, far, kwargs={"request": request()}, eta="2099-01-01T00:00:00+00:00")
    for task_id, field in ((expired, "expires"), (far, "eta")):
        record = wait_for(task_id, "rejected", timeout_s=60)
        assert record.last_error is not None and record.last_error.errors[0]["field"] == field
    scheduled = crm.control.inspect(destination=[hostname(worker)], timeout=5).scheduled() or {}
    assert scheduled.get(hostname(worker)) == []

    placed = fleet.enqueue(**request())
    wait_for(placed, "placed", timeout_s=60)
    length = len(fleet.client.store.get(placed).history)
    original = {"request": request()}
    send_raw(fleet, placed, kwargs=original, eta="2099-01-01T00:00:00+00:00")
    for _ in range(299):
        send_raw(fleet, placed, kwargs=original)

    def counted() -> StatusRecord | None:
        record = fleet.client.store.get(placed)
        last = record.history[-1] if record else None
        return record if last and last.times == 300 else None

    record = wait_until(counted, 60, "300 copies counted", interval_s=0.2)
    assert record.history[-1].event == "duplicate delivery ignored"
    assert len(record.history) == length + 1
    assert len(calls_for(sim, placed)) == 1


def test_remote_control_answers_what_flower_reads_and_refuses_the_rest(
    fleet: Fleet, sim: Any, wait_for: Any
) -> None:
    """Issue 26.5: `shutdown`, pool and consumer changes are refused (the worker goes on);
    inspection answers; a revoke cancels the request in the status store, recorded."""
    worker = fleet.start_worker()
    crm = foreign_client(fleet.env["FOLLOWUP_BROKER_URL"])
    me = [hostname(worker)]
    ns = fleet.client.settings.namespace

    replies = crm.control.broadcast("shutdown", destination=me, reply=True, timeout=5)
    assert "refused" in json.dumps(replies)
    added = crm.control.add_consumer(f"{ns}:outcomes", destination=me, reply=True, timeout=5)
    assert "refused" in json.dumps(added)
    assert crm.control.ping(destination=me, timeout=5)
    queues = crm.control.inspect(destination=me, timeout=5).active_queues() or {}
    assert [q["name"] for q in queues[me[0]]] == [fleet.queue]

    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    waiting = fleet.enqueue(**request(not_before=later))
    wait_for(waiting, "scheduled", timeout_s=60)
    answer = crm.control.revoke(waiting, destination=me, reply=True, timeout=5)
    assert "cancelled" in json.dumps(answer)
    record = wait_for(waiting, "cancelled", timeout_s=60)
    assert "by a remote revoke" in (record.history[-1].detail or "")

    placed = still_serves(fleet, worker, sim, wait_for)
    assert placed.state == "placed"
    assert "remote control command refused" in worker.log()


def test_terminal_escapes_in_a_message_are_shown_escaped_by_the_cli(
    fleet: Fleet, wait_for: Any
) -> None:
    """Issue 26.8: ESC, BEL, CR and LF in a rejected message's fields (a contact id, an
    idempotency key, an unknown field's name) reach `followup list`, `status` and
    `outcomes` escaped: no retitled terminal, no forged line."""
    fleet.start_worker()
    forged = "c-1\x1b]0;pwned\x07\r\nstate=placed"
    task_id = uuid.uuid4().hex
    send_raw(
        fleet,
        task_id,
        kwargs={
            "request": request(
                contact_id=forged, idempotency_key="k\x1b[2J", **{"\x1b[31mred": "x"}
            )
        },
    )
    record = wait_for(task_id, "rejected", timeout_s=60)
    assert record.last_error is not None
    fields = {e["field"] for e in record.last_error.errors}
    assert {"contact_id", "idempotency_key"} <= fields

    shown = [
        fleet.followup("status", task_id),
        fleet.followup("list", "--state", "rejected", "--limit", "500"),
        fleet.followup("outcomes", "--count", "500"),
    ]
    for result in shown:
        assert result.returncode == 0, result.stderr
        assert task_id in result.stdout
        for control in ("\x1b", "\x07", "\r"):
            assert control not in result.stdout + result.stderr
        assert not any(line.startswith("state=placed") for line in result.stdout.splitlines())
    assert "\\x1b" in shown[0].stdout


def test_nothing_is_published_or_recorded_under_an_id_that_is_not_a_request_id(
    fleet: Fleet,
) -> None:
    """Issue 26.1: the sweeper republishes under the record's own id; Celery would mint a new
    one for an empty id, so publish and the store refuse such ids (and unsafe queues)."""
    from followup.tasks.publish import publish
    from followup.tasks.request import parse_request

    app, store = fleet.client.app, fleet.client.store
    valid = parse_request(request())
    for bad in ("", None, "café-1", "x" * 129, "a\nb"):
        with pytest.raises(ValueError, match="request id"):
            publish(app, bad, request(), fleet.queue)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="request id"):
            store.register(bad, valid, queue=fleet.queue, source="test")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="queue"):
        publish(app, uuid.uuid4().hex, request(), f"{fleet.client.settings.namespace}:outcomes")


def test_bodies_and_headers_celery_would_choke_on_are_rejected_and_the_worker_goes_on(
    fleet: Fleet, sim: Any, wait_for: Any
) -> None:
    """Issue 26 audit: kwargs not a dict, args not a list (a string "args" first too: Celery
    would take it for a hybrid message), a timelimit that is not two numbers, stamped_headers
    that are not a list of names, stamps that are not a dict: each `rejected`, named; no worker
    dies on it (Celery's Request would raise TypeError, an "Unrecoverable error")."""
    worker = fleet.start_worker()
    good = {"request": request()}
    cases: dict[str, dict[str, Any]] = {
        "kwargs": dict(body=json.dumps([[], [1, 2], {}])),
        "args": dict(body=json.dumps([5, {}, {}])),
        "hybrid": dict(body=json.dumps(["args", good, {}])),
        "timelimit": dict(kwargs=good, timelimit={"a": 1}),
        "stamped_headers": dict(kwargs=good, stamped_headers=5),
        "stamps": dict(kwargs=good, stamps=[1]),
    }
    ids = {name: uuid.uuid4().hex for name in cases}
    for name, fields in cases.items():
        send_raw(fleet, ids[name], **fields)
    for name, task_id in ids.items():
        record = wait_for(task_id, "rejected", timeout_s=60)
        assert record.last_error is not None, name
        field = "args" if name == "hybrid" else name
        assert record.last_error.errors[0]["field"] == field, name
        assert requests_for(sim, task_id) == []
    still_serves(fleet, worker, sim, wait_for)
    log = worker.log()
    assert "Unrecoverable error" not in log
    assert NUMBER not in log


def test_an_alias_never_shadows_a_request_of_its_own(fleet: Fleet, sim: Any, wait_for: Any) -> None:
    """Issue 26 audit: a message `order-77` carrying victim-A's idempotency key leaves an alias
    order-77 -> victim-A; a genuine order-77 registered later is its own record, and an
    operator's status, cancel and a remote revoke of order-77 act on order-77 only."""
    worker = fleet.start_worker()
    crm = foreign_client(fleet.env["FOLLOWUP_BROKER_URL"])
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    same = request(idempotency_key=unique(), not_before=later)
    victim = fleet.enqueue(**same)
    wait_for(victim, "scheduled", timeout_s=60)
    order, revoked = f"order-{unique()}", f"order-{unique()}"
    for task_id in (order, revoked):
        send_raw(fleet, task_id, kwargs={"request": same})
    ns, store = fleet.client.settings.namespace, fleet.client.store

    def keys(kind: str) -> bool:
        return store.redis.exists(*(f"{ns}:{kind}:{i}" for i in (order, revoked))) == 2

    wait_until(lambda: keys("alias"), 60, "both aliases")
    for task_id in (order, revoked):
        send_raw(fleet, task_id, kwargs={"request": request(not_before=later)})
    wait_until(lambda: keys("req"), 60, "both genuine requests recorded")
    for task_id in (order, revoked):
        assert wait_for(task_id, "scheduled", timeout_s=60).request_id == task_id

    cancelled = fleet.followup("cancel", order)
    assert cancelled.returncode == 0, cancelled.stderr
    assert wait_for(order, "cancelled", timeout_s=60).request_id == order
    me = [hostname(worker)]
    assert "cancelled" in json.dumps(
        crm.control.revoke(revoked, destination=me, reply=True, timeout=5)
    )
    assert wait_for(revoked, "cancelled", timeout_s=60).request_id == revoked
    assert store.get(victim).state == "scheduled"
    assert requests_for(sim, victim) == []


def test_the_embed_holds_only_what_celery_defines_and_never_overrides_the_id(
    fleet: Fleet, sim: Any, wait_for: Any
) -> None:
    """Issue 26 audit: Celery lays the body's embed over the task's request context, id
    included. Any key but callbacks, errbacks, chain and chord is refused (`rejected` under the
    message's own id); nothing lands under the embedded id, nor in another request's history."""
    worker = fleet.start_worker()
    legit = fleet.enqueue(**request())
    wait_for(legit, "placed", timeout_s=60)
    history = len(fleet.client.store.get(legit).history)
    elsewhere = f"victim-{unique()}"
    embeds = {"new": elsewhere, "legit": legit, "list": ["x"]}
    ids = {name: uuid.uuid4().hex for name in embeds}
    for name, embedded in embeds.items():
        send_raw(fleet, ids[name], kwargs={"request": request()}, embed={**EMBED, "id": embedded})
    for name, task_id in ids.items():
        record = wait_for(task_id, "rejected", timeout_s=60)
        assert record.last_error is not None and record.last_error.code == "message.embedded"
        assert "id" in record.last_error.message, name
        assert requests_for(sim, task_id) == []
    assert fleet.client.store.get(elsewhere) is None
    assert requests_for(sim, elsewhere) == []
    assert len(fleet.client.store.get(legit).history) == history
    still_serves(fleet, worker, sim, wait_for)


def test_other_kwargs_and_times_celery_cannot_convert_are_rejected(
    fleet: Fleet, sim: Any, wait_for: Any
) -> None:
    """Issue 26 audit: a kwargs key besides "request" ("self" would be a TypeError, acked
    with no record) and an eta or expires that overflows when converted to UTC (Celery drops
    the message with no record): each `rejected`, naming the field."""
    worker = fleet.start_worker()
    good = {"request": request()}
    cases: dict[str, dict[str, Any]] = {
        "kwargs": dict(kwargs={**good, "self": 1}),
        "eta": dict(kwargs=good, eta="0001-01-01T00:00:00+23:59"),
        "expires": dict(kwargs=good, expires="9999-12-31T23:59:59-23:59"),
    }
    ids = {name: uuid.uuid4().hex for name in cases}
    for name, fields in cases.items():
        send_raw(fleet, ids[name], **fields)
    for name, task_id in ids.items():
        record = wait_for(task_id, "rejected", timeout_s=60)
        assert record.last_error is not None and record.last_error.errors[0]["field"] == name
        assert requests_for(sim, task_id) == []
    still_serves(fleet, worker, sim, wait_for)


def test_a_compressed_or_undecodable_body_is_rejected_with_no_body_in_the_log(
    fleet: Fleet, sim: Any, wait_for: Any
) -> None:
    """Issue 26 audit: a `compression` header (gzip over a body that is not, or an unknown
    one) made Celery log the whole body at CRITICAL and drop the message with no record. It
    is `rejected` under its id, named; the log holds no body."""
    worker = fleet.start_worker()
    secret = "diabetes, card 4111 1111 1111 1111"
    good = {"request": request(reason=secret)}
    ids = {name: uuid.uuid4().hex for name in ("application/x-gzip", "bogus/none")}
    for compression, task_id in ids.items():
        send_raw(fleet, task_id, kwargs=good, compression=compression)
    for task_id in ids.values():
        record = wait_for(task_id, "rejected", timeout_s=60)
        assert record.last_error is not None
        assert record.last_error.errors[0]["field"] == "compression"
        assert requests_for(sim, task_id) == []
    still_serves(fleet, worker, sim, wait_for)
    log = worker.log()
    assert "diabetes" not in log and "4111" not in log and NUMBER not in log
    assert "critical" not in log.lower()
