"""The pipeline, the sweeper and the token cache, run in this process against real Redis and
the real simulator: no worker process, so each step can be driven and looked at directly."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from followup.config.settings import Settings
from followup.tasks.producer import FollowUpClient
from followup.worker.runtime import Runtime
from followup.worker.sweeper import Sweeper
from followup.worker.tokens import TokenCache
from tests.conftest import calls_for, requests_for, unique

pytestmark = pytest.mark.integration


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = Runtime(settings)
    yield rt
    rt.close()


def _request(**overrides: Any) -> dict[str, Any]:
    return {
        "contact_id": unique(),
        "user_id": "u-1001",
        "phone_number": "+61298765432",
        **overrides,
    }


def test_a_recorded_request_is_placed_by_one_delivery(
    runtime: Runtime, client: FollowUpClient, private_queue: str, sim: Any
) -> None:
    request = _request()
    request_id = client.enqueue(request, queue=private_queue)  # no worker consumes this queue

    outcome = runtime.pipeline.handle(request_id, (), {"request": request})

    record = client.status(request_id)
    assert outcome == "placed"
    assert record is not None and record.state == "placed"
    assert record.conversation_id == calls_for(sim, request_id)[0]["id"]
    # A second delivery of the same message finds it done: no second call.
    assert runtime.pipeline.handle(request_id, (), {"request": request}) == "done"
    assert len(calls_for(sim, request_id)) == 1


def test_first_sight_of_another_services_message_registers_then_places(
    runtime: Runtime, client: FollowUpClient, sim: Any
) -> None:
    request_id = uuid.uuid4().hex  # the sender's Celery task id
    outcome = runtime.pipeline.handle(request_id, (), {"request": _request()})
    assert outcome == "placed"
    record = client.status(request_id)
    assert record is not None
    assert [h.event for h in record.history][:2] == ["enqueued", "claimed"]
    assert len(calls_for(sim, request_id)) == 1


def test_a_malformed_message_is_rejected_with_its_errors(
    runtime: Runtime, client: FollowUpClient, sim: Any
) -> None:
    request_id = uuid.uuid4().hex
    outcome = runtime.pipeline.handle(request_id, ("call them",), {})
    record = client.status(request_id)
    assert outcome == "rejected"
    assert record is not None and record.state == "rejected"
    assert record.last_error is not None
    assert record.last_error.errors[0]["field"] == "request"
    assert requests_for(sim, request_id) == []


def test_the_sweeper_publishes_a_due_retry_and_resolves_a_lost_sent_claim(
    runtime: Runtime, client: FollowUpClient, private_queue: str, settings: Settings
) -> None:
    store = client.store
    retry_id = client.enqueue(_request(), queue=private_queue)
    claim = store.claim(retry_id, lease_s=30)
    store.finish(retry_id, claim.token, "retrying", event="will retry", retry_in_s=0)

    sent_id = client.enqueue(_request(), queue=private_queue)
    claim = store.claim(sent_id, lease_s=30)
    assert store.mark_sent(sent_id, claim.token, user="u-1001").outcome == "sent"
    # The worker is lost with the call sent; its lease runs out (made to, here, at once).
    store.redis.hset(f"{store.ns}:req:{sent_id}", "lease_until", 0)
    store.redis.zadd(f"{store.ns}:due", {sent_id: 0})

    published: list[str] = []
    sweeper = Sweeper(
        store,
        lambda request_id, request, queue: published.append(request_id),
        lease_s=settings.claim_lease_s,
    )
    # Other tests of this session share the namespace and may have requests due before
    # these two: sweep until both are reached (a bounded number of batches).
    for _ in range(50):
        sweeper.sweep_once()
        record = client.status(sent_id)
        if retry_id in published and record is not None and record.state == "unknown":
            break

    assert retry_id in published
    assert sent_id not in published
    assert record is not None and record.state == "unknown"
    assert "claim expired after sending" in [h.event for h in record.history]


def test_a_401_takes_the_send_marker_back_so_a_lost_lease_is_not_called_unknown(
    client: FollowUpClient, private_queue: str, settings: Settings
) -> None:
    store = client.store
    request_id = client.enqueue(_request(), queue=private_queue)
    claim = store.claim(request_id, lease_s=30)
    assert store.mark_sent(request_id, claim.token, user="u-1001").attempts == 1
    assert store.unsend(request_id, claim.token, "401 authentication.required")

    record = client.status(request_id)
    assert record is not None and record.attempts == 0  # refunded: the platform did nothing
    assert record.history[-1].event == "not processed"
    # The token refresh outlives the lease; the sweeper must not call this one unknown.
    store.redis.hset(f"{store.ns}:req:{request_id}", "lease_until", 0)
    store.redis.zadd(f"{store.ns}:due", {request_id: 0})
    Sweeper(store, lambda *_: None, lease_s=settings.claim_lease_s).sweep_once()
    record = client.status(request_id)
    assert record is not None and record.state == "retrying"
    assert record.history[-1].event == "claim expired before sending"


def test_the_token_cache_fetches_once_for_many_threads_and_again_after_invalidate(
    runtime: Runtime, settings: Settings, sim: Any
) -> None:
    tokens = TokenCache(runtime.http, runtime.platform.token_request(), max_retry_after_s=60)
    before = sim.tokens()["token_requests"]
    sim.set_faults(token_latency_s=0.3)  # every thread arrives while the first fetch runs
    with ThreadPoolExecutor(max_workers=8) as pool:
        seen = set(pool.map(lambda _: tokens.get(), range(8)))
    assert len(seen) == 1
    assert sim.tokens()["token_requests"] == before + 1

    tokens.invalidate(seen.pop())
    assert tokens.get() not in seen
    assert sim.tokens()["token_requests"] == before + 2
