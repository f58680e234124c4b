"""The status store's bookkeeping, against real Redis."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import redis

from followup.cli.local_stack import delete_keys
from followup.tasks.request import parse_request
from followup.worker import store_lua
from followup.worker.records import ErrorInfo, State
from followup.worker.store import Pacing, StatusStore

pytestmark = pytest.mark.integration


@pytest.fixture
def short_lived(redis_url: str) -> StatusStore:
    """A store whose finished records expire after one second, in a namespace of its own."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    return StatusStore(
        client,
        f"test-store-{uuid.uuid4().hex[:8]}",
        idempotency_ttl_s=1,
        record_ttl_s=1,
        redeliver_after_s=60,
    )


def test_finished_records_expire_and_leave_no_index_entries(short_lived: StatusStore) -> None:
    store = short_lived
    store.record_rejected(
        "r-1", {"x": 1}, ErrorInfo(code="invalid.request", message="bad"), "q", "message"
    )
    store.register(
        "q-1",
        parse_request({"contact_id": "c-1", "user_id": "u-1", "phone_number": "+61298765432"}),
        queue="q",
        source="producer",
    )
    assert store.counts()["rejected"] == 1

    time.sleep(1.5)
    store.take_due()  # the sweeper's pass also trims the indices

    assert store.get("r-1") is None
    assert store.counts()["rejected"] == 0
    assert store.counts()["queued"] == 1  # a pending request never expires
    assert [r.request_id for r in store.list_requests()] == ["q-1"]
    keys = store.redis.keys(f"{store.ns}:*")
    assert not [k for k in keys if "r-1" in k]
    store.redis.delete(*keys)


def test_an_idempotency_key_lasts_while_its_request_is_pending_or_unknown(
    short_lived: StatusStore, redis_url: str
) -> None:
    store = short_lived  # the key's TTL is one second, counted from when the request finished
    request = parse_request(
        {
            "contact_id": "c-1",
            "user_id": "u-1",
            "phone_number": "+61298765432",
            "idempotency_key": "crm-1",
        }
    )
    try:
        assert store.register("a", request, queue="q", source="producer").outcome == "created"
        time.sleep(1.5)  # pending, well past the key's TTL
        again = store.register("b", request, queue="q", source="producer")
        assert (again.outcome, again.request_id) == ("duplicate", "a")

        claim = store.claim("a", lease_s=30)
        assert store.mark_sent("a", claim.token, user="u-1").outcome == "sent"
        store.redis.hset(f"{store.ns}:req:a", "lease_until", 0)  # its worker was lost
        assert store.claim("a", lease_s=30, mode="sweep").outcome == "unknown"
        time.sleep(1.5)  # unknown: a person decides, and the key still guards it
        assert store.get("a").state == "unknown"
        assert store.register("c", request, queue="q", source="producer").outcome == "duplicate"

        assert store.retry("a", "ops")[0]
        claim = store.claim("a", lease_s=30)
        store.mark_sent("a", claim.token, user="u-1")
        assert store.finish("a", claim.token, State.PLACED, event="placed").recorded
        time.sleep(1.5)  # finished: now the key's TTL runs out
        assert store.register("d", request, queue="q", source="producer").outcome == "created"
    finally:
        delete_keys(redis_url, f"{store.ns}:*")


def test_every_lua_script_compiles(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    for script in store_lua.SCRIPTS:
        assert client.script_load(script.source), script.name


def _capped_store(redis_url: str, cap: int, *, max_wait_s: float = 3 * 86400) -> StatusStore:
    return StatusStore(
        redis.Redis.from_url(redis_url, decode_responses=True),
        f"test-cap-{uuid.uuid4().hex[:8]}",
        idempotency_ttl_s=60,
        record_ttl_s=60,
        redeliver_after_s=60,
        max_wait_s=max_wait_s,
        pacing=Pacing(number_cap=cap, number_window=3600),
    )


def _send_one(store: StatusStore, request_id: str, number: str = "+13055550100") -> str:
    request = parse_request({"contact_id": "c", "user_id": "u", "phone_number": number})
    store.register(request_id, request, queue="q", source="producer")
    claim = store.claim(request_id, lease_s=30)
    return store.mark_sent(request_id, claim.token, user="u").outcome


def test_the_per_number_cap_counts_calls_sent_and_refunds_what_the_platform_did_not_take(
    redis_url: str,
) -> None:
    store = _capped_store(redis_url, 2)
    try:
        assert _send_one(store, "a") == "sent"
        assert _send_one(store, "b") == "sent"
        assert _send_one(store, "other", number="+13055550199") == "sent"  # another number
        assert _send_one(store, "c") == "wait"
        record = store.get("c")
        assert record is not None and record.state == "scheduled"
        assert (record.waiting_for, record.attempts) == ("number_cap", 0)
        assert record.next_attempt_at is not None
        assert record.next_attempt_at.timestamp() > time.time() + 3500  # the oldest + 1 h
        # No key holds the number in the clear.
        assert not [k for k in store.redis.keys(f"{store.ns}:*") if "3055550100" in k]

        # "b"'s platform did nothing with it (a 429): it no longer counts, and "d" goes.
        b = store.redis.hget(f"{store.ns}:req:b", "claim")
        assert b is not None
        store.finish("b", b, State.RETRYING, event="will retry", spent=False, retry_in_s=1)
        assert _send_one(store, "d") == "sent"
        # "d" was refused with a 401 and taken back: it does not count either.
        d = store.redis.hget(f"{store.ns}:req:d", "claim")
        assert d is not None and store.unsend("d", d, "401")
        assert _send_one(store, "e") == "sent"
        assert _send_one(store, "f") == "wait"
    finally:
        delete_keys(redis_url, f"{store.ns}:*")


def test_a_cap_of_0_is_off_and_the_wait_is_bounded_by_max_wait(redis_url: str) -> None:
    off = _capped_store(redis_url, 0)
    bounded = _capped_store(redis_url, 1, max_wait_s=600)
    try:
        assert [_send_one(off, f"r-{n}") for n in range(5)] == ["sent"] * 5
        assert _send_one(bounded, "a") == "sent"
        assert _send_one(bounded, "b") == "wait"
        record = bounded.get("b")
        assert record is not None and record.next_attempt_at is not None
        assert record.next_attempt_at.timestamp() <= record.created_at.timestamp() + 600
    finally:
        delete_keys(redis_url, f"{off.ns}:*")
        delete_keys(redis_url, f"{bounded.ns}:*")


def test_two_threads_never_both_pass_the_per_number_cap(redis_url: str) -> None:
    stores = [_capped_store(redis_url, 3) for _ in range(2)]
    ns = stores[0].ns
    stores[1].ns = ns
    outcomes: list[str] = []
    try:
        for n in range(20):
            request = parse_request(
                {"contact_id": "c", "user_id": "u", "phone_number": "+13055550100"}
            )
            stores[0].register(f"r-{n}", request, queue="q", source="producer")

        def race(store: StatusStore, ids: list[str]) -> None:
            for request_id in ids:
                claim = store.claim(request_id, lease_s=30)
                outcomes.append(store.mark_sent(request_id, claim.token, user="u").outcome)

        threads = [
            threading.Thread(target=race, args=(stores[k], [f"r-{n}" for n in range(k, 20, 2)]))
            for k in range(2)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert sorted(outcomes) == ["sent"] * 3 + ["wait"] * 17
    finally:
        delete_keys(redis_url, f"{ns}:*")


def test_a_late_unknown_answer_on_an_unknown_request_is_only_a_history_note(
    short_lived: StatusStore, redis_url: str
) -> None:
    """A stalled worker resumes after the sweeper marked its request `unknown`; its own answer
    (a read timeout: unknown too) must not count it, stream it or restart its lookups again.
    A late definite answer still settles it, counted once under its new outcome."""
    store = short_lived
    request = parse_request({"contact_id": "c-1", "user_id": "u-1", "phone_number": "+61298765432"})
    rkey, stream = f"{store.ns}:req:a", f"{store.ns}:outcomes"
    try:
        store.register("a", request, queue="q", source="producer")
        claim = store.claim("a", lease_s=30)
        assert store.mark_sent("a", claim.token, user="u-1").outcome == "sent"
        store.redis.hset(rkey, "lease_until", 0)  # its worker stalls (SIGSTOP)
        assert store.claim("a", lease_s=30, mode="sweep").outcome == "unknown"
        store.redis.hset(
            rkey, mapping={"unknown_at": 123.0, "lookups": 2}
        )  # a lookup already asked
        before = store.redis.hgetall(rkey)
        history = len(store.get("a").history)

        late = store.finish(
            "a", claim.token, State.UNKNOWN, event="unknown", detail="ReadTimeout", spent=True
        )

        assert late.recorded
        assert store.redis.hgetall(f"{store.ns}:counts") == {"unknown": "1"}
        assert store.redis.xlen(stream) == 1
        after = store.redis.hgetall(rkey)
        assert {k: after.get(k) for k in before} == before  # no lookup reset, nothing moved
        assert len(store.get("a").history) == history + 1

        placed = store.finish(
            "a", claim.token, State.PLACED, event="placed", conversation_id="conv-1"
        )
        assert placed.recorded
        assert store.get("a").state == State.PLACED
        assert store.redis.hgetall(f"{store.ns}:counts") == {"unknown": "1", "placed": "1"}
        assert [f["state"] for _, f in store.redis.xrange(stream)] == ["unknown", "placed"]
        outcomes = store.redis.hgetall(store.redis.hget(rkey, "counted_in"))
        assert (int(outcomes.get("unknown", 0)), int(outcomes["placed"])) == (0, 1)
    finally:
        delete_keys(redis_url, f"{store.ns}:*")
