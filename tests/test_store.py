"""The status store's bookkeeping, against real Redis."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from followup.cli.local_stack import delete_keys
from followup.tasks.request import parse_request
from followup.worker import store_lua
from followup.worker.records import ErrorInfo, State
from followup.worker.store import StatusStore

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
