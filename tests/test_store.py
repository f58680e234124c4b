"""The status store's bookkeeping, against real Redis."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from followup.tasks.request import parse_request
from followup.worker.records import ErrorInfo
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
