"""Waits that end, and records that stay small (issue 21): a request that waits a long time
keeps a bounded history, a store that could evict keys is refused, the sweeper rides out a
broker outage, the calling window is checked again just before the call leaves, and pacing,
the breaker and credentials recover under pressure. Real Redis, real workers, the simulator
with the fault."""

from __future__ import annotations

import itertools
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from followup.cli.local_stack import BIN, PrivateRedis, Simulator, Worker, free_port, wait_until
from followup.config.settings import Settings, load_settings
from followup.tasks.request import parse_request
from followup.worker.http import PlatformHttp
from followup.worker.platforms.conversations.client import client_credentials
from followup.worker.records import State
from followup.worker.store import Pacing, StatusStore
from followup.worker.sweeper import Sweeper
from followup.worker.tokens import TokenCache, TokenError
from tests.conftest import calls_for, followup
from tests.test_pacing import NUMBER, Fleet

pytestmark = pytest.mark.integration


@pytest.fixture
def fleet(env: dict[str, str], log_dir: Path) -> Iterator[Callable[..., Fleet]]:
    made: list[Fleet] = []

    def make(**settings: str) -> Fleet:
        made.append(Fleet(env, log_dir, **settings))
        return made[-1]

    yield make
    for f in made:
        f.stop()


def test_a_request_throttled_over_and_over_keeps_a_small_history(
    fleet: Callable[..., Fleet],
) -> None:
    """20 answers of 429 (three history entries each): the history keeps its first and last
    entries and one that counts what it left out, so a request throttled for days stays a
    few KB."""
    f = fleet(FOLLOWUP_MAX_ATTEMPTS="3")
    f.sim.set_faults(by_contact={"c-throttled": ["429"] * 20}, retry_after="0")
    request_id = f.enqueue(contact="c-throttled")
    f.start_workers(1)

    record = f.wait(request_id, "placed", timeout_s=120)
    assert record.attempts == 1
    events = [h.event for h in record.history]
    assert len(events) <= 31, events
    assert events[0] == "enqueued" and events[-1] == "placed"
    (left_out,) = [h for h in record.history if h.event == "entries left out"]
    assert left_out.count is not None and left_out.count >= 20 * 3 - 31
    assert left_out.since is not None and left_out.since < left_out.at
    key = f"{f.env['FOLLOWUP_NAMESPACE']}:hist:{request_id}"
    assert f.client.store.redis.memory_usage(key) < 8 * 1024


def test_a_worker_refuses_a_store_that_evicts_keys() -> None:
    """maxmemory-policy allkeys-lru could drop an idempotency key, and a redelivered message
    would be dialled twice: the worker exits, naming the setting and its safe value."""
    private = PrivateRedis("--maxmemory-policy", "allkeys-lru")
    try:
        env = {
            "FOLLOWUP_REDIS_URL": private.url,
            "FOLLOWUP_BROKER_URL": private.url,
            "FOLLOWUP_CLIENT_ID": "x",
            "FOLLOWUP_CLIENT_SECRET": "y",
            "FOLLOWUP_QUEUE": f"evict-{uuid.uuid4().hex[:6]}",
        }
        worker = subprocess.run(
            [str(BIN / "celery"), "-A", "followup", "worker", "--without-mingle"],
            env={**_no_followup_env(), **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        private.stop()
    assert worker.returncode == 2
    assert "Traceback" not in worker.stderr
    assert "maxmemory-policy allkeys-lru" in worker.stderr
    assert "noeviction" in worker.stderr


def _no_followup_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FOLLOWUP_")}


def _store(redis_url: str, **options: float) -> StatusStore:
    return StatusStore(
        redis.Redis.from_url(redis_url, decode_responses=True),
        f"test-waits-{uuid.uuid4().hex[:8]}",
        idempotency_ttl_s=60,
        record_ttl_s=60,
        redeliver_after_s=options.get("redeliver_after_s", 5.0),
    )


def _due_now(store: StatusStore, count: int, queue: str = "q") -> list[str]:
    """`count` queued requests whose message was lost: due for the sweeper now."""
    ids = [f"lost-{uuid.uuid4().hex[:8]}" for _ in range(count)]
    for request_id in ids:
        fields = {"contact_id": request_id, "user_id": "u-1", "phone_number": NUMBER}
        store.register(request_id, parse_request(fields), queue=queue, source="producer")
        store.redis.zadd(f"{store.ns}:due", {request_id: 0})
    return ids


def test_one_failed_publish_leaves_the_rest_of_the_batch_published(redis_url: str) -> None:
    store = _store(redis_url)
    ids = _due_now(store, 5)
    published: list[str] = []

    def publish(request_id: str, request: dict[str, Any], queue: str) -> None:
        if request_id == ids[1]:
            raise ConnectionError("the broker refused this one")
        published.append(request_id)

    try:
        Sweeper(store, publish, lease_s=30).sweep_once()
        assert sorted(published) == sorted(i for i in ids if i != ids[1])
        # The one that failed is due again at once, and was not counted as republished.
        due = dict(store.redis.zrange(f"{store.ns}:due", 0, -1, withscores=True))
        assert due[ids[1]] <= time.time()
        assert store.redis.hget(f"{store.ns}:req:{ids[1]}", "republished") == "0"
        assert store.redis.hget(f"{store.ns}:req:{ids[0]}", "republished") == "1"
    finally:
        store.redis.delete(*store.redis.keys(f"{store.ns}:*"))


def test_a_broker_outage_costs_only_its_own_length(redis_url: str) -> None:
    """Sweeps while the broker is down push nothing back: the sweep after it comes back
    publishes every request that came due meanwhile."""
    store = _store(redis_url)
    ids = _due_now(store, 20)
    published: list[str] = []
    broker_up = False

    def publish(request_id: str, request: dict[str, Any], queue: str) -> None:
        if not broker_up:
            raise ConnectionError("the broker is down")
        published.append(request_id)

    sweeper = Sweeper(store, publish, lease_s=30)
    try:
        for _ in range(5):
            assert sweeper.sweep_once() == 0
        republished = store.redis.hmget(f"{store.ns}:req:{ids[0]}", "republished")
        assert republished == ["0"]
        broker_up = True
        assert sweeper.sweep_once() == 20
        assert sorted(published) == sorted(ids)
    finally:
        store.redis.delete(*store.redis.keys(f"{store.ns}:*"))


def test_requests_due_while_the_broker_is_down_go_once_it_is_back(
    fleet: Callable[..., Fleet],
) -> None:
    """A real worker whose broker (a Redis of its own) is stopped and started again: the
    requests that came due meanwhile are placed, once each, and their republish count did
    not grow with the failed publishes."""
    broker = PrivateRedis()
    try:
        f = fleet(FOLLOWUP_BROKER_URL=broker.url)
        f.start_workers(1)
        broker.proc.terminate()  # its port refuses connections until it is started again
        broker.proc.wait(10)
        ids = _due_now(f.client.store, 3, f.env["FOLLOWUP_QUEUE"])
        wait_until(
            lambda: f.workers[0].log().count("sweeper could not publish") >= 3,
            60,
            "three sweeps that could not publish",
        )
        store = f.client.store
        assert [store.redis.hget(f"{store.ns}:req:{i}", "republished") for i in ids] == ["0"] * 3
        broker.restart()
        for request_id in ids:
            f.wait(request_id, "placed", timeout_s=60)
            assert len(calls_for(f.sim, request_id)) == 1
    finally:
        broker.stop()


def test_a_call_held_past_its_not_after_before_it_leaves_is_not_sent(
    fleet: Callable[..., Fleet],
) -> None:
    """Claimed inside its window, then held up (a token endpoint that takes 10 s) until
    not_after has passed: the send marker checks the window again, and the call never
    leaves (window.missed)."""
    f = fleet(FOLLOWUP_HTTP_TIMEOUT_S="15", FOLLOWUP_CLAIM_LEASE_S="61")
    f.sim.set_faults(token_latency_s=10)
    f.start_workers(1)
    not_after = datetime.now(UTC) + timedelta(seconds=6)
    request_id = f.client.enqueue(
        contact_id="c-late", user_id="u-1", phone_number=NUMBER, not_after=not_after
    )

    record = f.wait(request_id, "failed", "placed", timeout_s=60)
    events = [h.event for h in record.history]
    assert "claimed" in events  # claimed inside its window (else this test proves nothing)
    assert calls_for(f.sim, request_id) == []
    assert record.state == "failed" and record.attempts == 0
    assert record.last_error is not None and record.last_error.code == "window.missed"


def test_a_worker_with_a_refused_secret_does_not_hold_the_others(
    fleet: Callable[..., Fleet],
) -> None:
    """A half-done rotation: two workers share the OAuth client, one still has the old
    secret. The fleet dials through the good one; the refused one says so in its log, in
    `followup worker-check` and in its metrics."""
    f = fleet()
    port = free_port()
    refused = Worker(
        {**f.env, "FOLLOWUP_CLIENT_SECRET": "rotated-out", "FOLLOWUP_METRICS_PORT": str(port)},
        name=f"refused-{uuid.uuid4().hex[:4]}",
        log_dir=f.log_dir,
    )
    f.workers.append(refused)
    wait_until(lambda: "refused" in refused.log(), 30, "the refusal in its log")
    f.start_workers(1)
    ids = [f.enqueue(user=f"u-{n}") for n in range(10)]

    for request_id in ids:
        record = f.wait(request_id, "placed", timeout_s=90)
        assert record.attempts == 1
        assert len(calls_for(f.sim, request_id)) == 1
    check = followup("worker-check", env=f.env)
    assert check.returncode == 1
    assert f"{refused.name}@" in check.stderr and "refused" in check.stderr
    assert f"{f.workers[1].name}@" in check.stdout
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert "followup_credentials_refused 1.0" in metrics


def test_the_breaker_gives_back_the_backlogs_slots_and_its_waiters_are_claimed_once(
    fleet: Callable[..., Fleet],
) -> None:
    """30 requests at 2 a second, the platform fails three times: the breaker opens. The
    slots reserved for the backlog are given back (the probe's slot is the cool-down's end,
    not the backlog's), and a request waiting for the breaker is claimed again once it is
    over, not every second."""
    f = fleet(
        FOLLOWUP_RATE_LIMIT_PER_S="2",
        FOLLOWUP_BREAKER_FAILURES="3",
        FOLLOWUP_BREAKER_COOLDOWN_S="5",
        FOLLOWUP_MAX_ATTEMPTS="8",
    )
    f.sim.set_faults(script=["500"] * 3)
    ids = [f.enqueue(user=f"u-{n}") for n in range(30)]
    f.start_workers(1)
    store, ns = f.client.store, f.env["FOLLOWUP_NAMESPACE"]

    def opened() -> tuple[dict[str, str], dict[str, str], float] | None:
        pipe = store.redis.pipeline(transaction=True)
        pipe.hgetall(f"{ns}:breaker").hgetall(f"{ns}:limiter").time()
        breaker, limiter, (seconds, micros) = pipe.execute()
        if breaker.get("state") != "open":
            return None
        return breaker, limiter, seconds + micros / 1e6

    breaker, limiter, now = wait_until(opened, 60, "the breaker to open", 0.01)
    assert now < float(breaker["ends"])  # seen during the cool-down (nothing reserves then)
    assert float(limiter["tat"]) <= float(breaker["ends"]) + 0.01

    for request_id in ids:
        f.wait(request_id, "placed", timeout_s=120)
        assert len(calls_for(f.sim, request_id)) == 1
    waits = [
        h.event
        for i in ids
        for h in f.client.status(i).history  # type: ignore[union-attr]
    ].count("waiting for breaker")
    assert waits <= 2 * len(ids), waits
    assert "the breaker closes" in f.workers[0].log()


def test_a_token_never_reaches_a_caller_as_none_when_invalidate_races_it(
    settings: Settings, sim: Simulator
) -> None:
    """Another thread drops the token (a 401 elsewhere) between its fetch and get()'s
    return: the caller still gets the token it fetched, never None ("Bearer None")."""
    http = PlatformHttp(timeout_s=2, keepalive_s=4, max_connections=4)

    def another_thread_invalidates(_: float) -> None:
        racing = threading.Thread(target=lambda: tokens.invalidate(tokens._token or ""))
        racing.start()
        racing.join()

    tokens = TokenCache(
        http,
        client_credentials(settings),
        max_retry_after_s=30,
        on_granted=another_thread_invalidates,
    )
    try:
        token = tokens.get()
        assert isinstance(token, str) and token
    finally:
        http.close()


def test_token_endpoint_failures_do_not_open_the_breaker(fleet: Callable[..., Fleet]) -> None:
    """The token endpoint fails (503) while the API is fine: those are not the API's
    failures, so the breaker stays closed and the requests are placed once it answers."""
    f = fleet(FOLLOWUP_BREAKER_FAILURES="2", FOLLOWUP_BREAKER_COOLDOWN_S="30")
    f.sim.set_faults(token_script=["503"] * 6, retry_after="")
    f.start_workers(1)
    ids = [f.enqueue(user=f"u-{n}") for n in range(3)]

    for request_id in ids:
        record = f.wait(request_id, "placed", timeout_s=60)
        assert record.attempts == 1
    assert f.sim.tokens()["token_requests"] >= 4  # the failures did happen
    ns = f.env["FOLLOWUP_NAMESPACE"]
    assert f.client.store.redis.hget(f"{ns}:breaker", "state") != "open"
    assert "the breaker opens" not in f.workers[0].log()


def test_one_agents_backlog_goes_out_in_order_each_waiting_once(
    fleet: Callable[..., Fleet],
) -> None:
    """Eight requests for one agent, 2 s apart: dialled in the order they were enqueued, and
    each waits for its turn about once, not once a sweep (O(n) claims, not O(n²))."""
    f = fleet(FOLLOWUP_PER_USER_INTERVAL_S="2", FOLLOWUP_PER_NUMBER_MAX_CALLS="0")
    ids = [f.enqueue(user="u-one") for _ in range(8)]
    f.start_workers(2)

    for request_id in ids:
        f.wait(request_id, "placed", timeout_s=120)
    calls = sorted(f.sim.calls(), key=lambda c: c["received_at"])
    assert [c["correlation_id"] for c in calls] == ids
    waits = [
        h.event
        for i in ids
        for h in f.client.status(i).history  # type: ignore[union-attr]
    ].count("waiting for agent_spacing")
    assert waits <= 2 * len(ids), waits  # once each, give or take a late wake-up


def test_six_429s_to_calls_sent_together_halve_the_rate_once(redis_url: str) -> None:
    """AIMD: the 429s answering calls sent before the rate was cut are that cut's news, not
    reasons for more cuts: six of them halve the rate once (not down to its floor); a 429 to
    a call sent after the cut halves it again."""
    store = StatusStore(
        redis.Redis.from_url(redis_url, decode_responses=True),
        f"test-aimd-{uuid.uuid4().hex[:8]}",
        idempotency_ttl_s=60,
        record_ttl_s=60,
        redeliver_after_s=60,
        pacing=Pacing(limit=10, burst=10, hold=5.0),
    )

    def sent(count: int) -> list[tuple[str, str]]:
        out = []
        for request_id in _due_now(store, count):
            claim = store.claim(request_id, lease_s=30)
            assert store.mark_sent(request_id, claim.token, user="u-1").outcome == "sent"
            out.append((request_id, claim.token))
        return out

    def throttled(request_id: str, token: str) -> float | None:
        return store.finish(
            request_id, token, State.RETRYING, event="will retry", slow=True, retry_in_s=30
        ).rate

    try:
        rates = [throttled(*call) for call in sent(6)]
        assert rates[0] is not None and 4.5 <= rates[0] <= 5.0
        assert rates[1:] == [None] * 5  # answers to calls sent before the cut
        (later,) = sent(1)
        again = throttled(*later)
        assert again is not None and again < rates[0]
    finally:
        store.redis.delete(*store.redis.keys(f"{store.ns}:*"))


def _agent_store(redis_url: str) -> StatusStore:
    return StatusStore(
        redis.Redis.from_url(redis_url, decode_responses=True),
        f"test-line-{uuid.uuid4().hex[:8]}",
        idempotency_ttl_s=60,
        record_ttl_s=60,
        redeliver_after_s=60,
        pacing=Pacing(spacing=2.0),
    )


def _queued(store: StatusStore, queue: str) -> str:
    request_id = f"r-{uuid.uuid4().hex[:8]}"
    fields = {"contact_id": request_id, "user_id": "u-1", "phone_number": NUMBER}
    store.register(request_id, parse_request(fields), queue=queue, source="producer")
    return request_id


def _send(store: StatusStore, request_id: str) -> str:
    claim = store.claim(request_id, lease_s=30)
    return store.mark_sent(request_id, claim.token, user="u-1").outcome


def test_a_request_nobody_takes_does_not_hold_the_agents_line(redis_url: str) -> None:
    """An earlier request of the agent's on a queue nobody consumes, or one no worker took
    within FOLLOWUP_REDELIVER_AFTER_S (republished), does not hold the agent's line; a fresh
    one on the same queue (a normal backlog) still goes first."""
    store = _agent_store(redis_url)
    _queued(store, "q-nobody-consumes")
    assert _send(store, _queued(store, "q")) == "sent"

    store = _agent_store(redis_url)
    stuck = _queued(store, "q")
    store.redis.hset(f"{store.ns}:req:{stuck}", "republished", 1)
    assert _send(store, _queued(store, "q")) == "sent"

    store = _agent_store(redis_url)
    _queued(store, "q")
    assert _send(store, _queued(store, "q")) == "wait"


def test_one_agents_batch_keeps_its_order_in_the_line(redis_url: str) -> None:
    """enqueue_many reads the clock once: each request of the batch still gets its own,
    strictly increasing place in the agent's line (not ties broken by request id)."""
    store = _agent_store(redis_url)
    ids = [f"r-{n:02d}-{uuid.uuid4().hex[:8]}"[::-1] for n in range(12)]
    batch = [
        (i, parse_request({"contact_id": i, "user_id": "u-1", "phone_number": NUMBER}), None)
        for i in ids
    ]
    store.register_many(batch, queue="q", source="producer")
    line = store.redis.zrange(f"{store.ns}:agentq:u-1", 0, -1, withscores=True)
    assert [i for i, _ in line] == ids
    assert len({score for _, score in line}) == len(ids)


def test_an_idle_worker_whose_credentials_work_keeps_saying_so(env: dict[str, str]) -> None:
    """Its token expired while it was idle, but its credentials were accepted and never
    refused since: it still says they work, so a refused worker hands its requests on to it
    instead of pausing the whole fleet for a minute. A refused worker says nothing."""
    from followup.worker.runtime import RECHECK_THREAD, Runtime

    ns = f"test-beacon-{uuid.uuid4().hex[:8]}"
    good = Runtime(load_settings({**env, "FOLLOWUP_NAMESPACE": ns}))
    bad = Runtime(
        load_settings({**env, "FOLLOWUP_NAMESPACE": ns, "FOLLOWUP_CLIENT_SECRET": "rotated"})
    )
    name = good.pipeline.credentials_pause
    try:
        good.pipeline.tokens.invalidate(good.pipeline.tokens.get())  # as if it expired
        good.store.redis.delete(f"{ns}:granted:{name}")
        good.say_credentials_work()
        assert bad.store.credentials_work_elsewhere(name)

        good.store.redis.delete(f"{ns}:granted:{name}")
        with pytest.raises(TokenError):
            bad.pipeline.tokens.get()
        bad.say_credentials_work()
        assert not bad.store.credentials_work_elsewhere(name)
    finally:
        good.close()
        bad.close()
    # The refused worker's next check of its credentials does not outlive it (it would
    # otherwise fire a minute later on a closed HTTP client, a traceback at shutdown).
    assert not [t for t in threading.enumerate() if t.name == RECHECK_THREAD and t.is_alive()]


def test_429s_to_questions_asked_together_halve_the_rate_once(redis_url: str) -> None:
    """A busy check's or a lookup's 429 is news of the rate it was asked at, as a call's
    is: three questions asked before a cut (their slots' time) halve the rate once; one
    asked after the cut halves it again."""
    store = StatusStore(
        redis.Redis.from_url(redis_url, decode_responses=True),
        f"test-aimd-q-{uuid.uuid4().hex[:8]}",
        idempotency_ttl_s=60,
        record_ttl_s=60,
        redeliver_after_s=60,
        pacing=Pacing(limit=10, burst=10, hold=5.0),
    )
    try:
        (lookup,) = _due_now(store, 1)
        store.redis.hset(f"{store.ns}:req:{lookup}", "state", "unknown")
        asked = [store.take_slot()[1] for _ in range(3)]
        first = store.slow_down(asked_at=asked[0])
        assert 4.5 <= first <= 5.0
        assert store.slow_down(asked_at=asked[1]) > 0.99 * first  # the same cut's news
        store.reconcile(
            lookup,
            conversation_id=None,
            detail="429",
            last=False,
            retry_in_s=30,
            slow=True,
            asked_at=asked[2],
        )
        assert store.slow_down(asked_at=asked[0]) > 0.99 * first  # the lookup's: no cut
        assert store.slow_down(asked_at=store.take_slot()[1]) < 0.7 * first
    finally:
        store.redis.delete(*store.redis.keys(f"{store.ns}:*"))


def _paced_store(redis_url: str, **pacing: float) -> StatusStore:
    """A store of its own namespace with these gates (Pacing's fields)."""
    return StatusStore(
        redis.Redis.from_url(redis_url, decode_responses=True),
        f"test-pacing-{uuid.uuid4().hex[:8]}",
        idempotency_ttl_s=600,
        record_ttl_s=600,
        redeliver_after_s=600,
        pacing=Pacing(**pacing),  # type: ignore[arg-type]
    )


def _aimd_store(redis_url: str, spacing: float = 0.0) -> StatusStore:
    return _paced_store(redis_url, limit=10, burst=1, spacing=spacing, hold=0.5, lead=0.25)


def _backlog(
    store: StatusStore, count: int, tag: str = "r", not_after: float | None = None
) -> list[str]:
    """`count` requests (an agent each), registered in one batch and each given its slot
    at once, faster than the limit: a backlog waiting for its slots builds."""
    from concurrent.futures import ThreadPoolExecutor

    ids = [f"{tag}-{n}-{uuid.uuid4().hex[:6]}" for n in range(count)]
    extra = {"not_after": datetime.fromtimestamp(not_after, UTC).isoformat()} if not_after else {}
    fields = {"phone_number": NUMBER, **extra}
    store.register_many(
        [(i, parse_request({"contact_id": i, "user_id": i, **fields}), None) for i in ids],
        queue="q",
        source="producer",
    )
    tokens = {i: store.claim(i, lease_s=600).token for i in ids}
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda i: store.mark_sent(i, tokens[i], user=i), ids))
    return ids


def _in_force(store: StatusStore, slots: dict[str, float]) -> list[float]:
    """The slots still to come that are of the limiter's epoch (not given back), in order."""
    epoch = store.redis.hget(f"{store.ns}:limiter", "epoch") or "0"
    now = time.time()
    return sorted(
        slot
        for i, slot in slots.items()
        if slot > now and store.redis.hget(f"{store.ns}:req:{i}", "slot_epoch") == epoch
    )


def _mark(store: StatusStore, request_id: str, user: str) -> str:
    """Claim and ask the send marker, holding in the thread as a worker would (bounded);
    returns 'sent' or 'wait'."""
    claim = store.claim(request_id, lease_s=30)
    for _ in range(20):
        answer = store.mark_sent(request_id, claim.token, user=user)
        if answer.outcome != "hold":
            return answer.outcome
        time.sleep(answer.seconds)
    raise AssertionError(f"{request_id} held for ever")


def _queued_for(store: StatusStore, user: str) -> str:
    request_id = f"r-{uuid.uuid4().hex[:8]}"
    fields = {"contact_id": request_id, "user_id": user, "phone_number": NUMBER}
    store.register(request_id, parse_request(fields), queue="q", source="producer")
    return request_id


def _cut_to_the_floor(store: StatusStore) -> None:
    """429s to calls each sent after the last cut: the rate halves each time, to its floor
    (a tenth of the limit)."""
    rate = None
    for n in range(8):
        request_id = _queued_for(store, f"cut-{n}")
        claim_token = store.claim(request_id, lease_s=30).token
        for _ in range(40):
            answer = store.mark_sent(request_id, claim_token, user=f"cut-{n}")
            if answer.outcome != "hold":
                break
            time.sleep(answer.seconds)
        assert answer.outcome == "sent", answer
        rate = store.finish(
            request_id, claim_token, State.RETRYING, event="will retry", slow=True, retry_in_s=60
        ).rate
        if rate is not None and rate <= 1.2:
            return
    raise AssertionError(f"the rate was not cut to its floor: {rate}")


def _dues(store: StatusStore, ids: list[str]) -> list[float]:
    out = []
    for request_id in ids:
        record = store.get(request_id, history=False)
        assert record is not None and record.next_attempt_at is not None
        out.append(record.next_attempt_at.timestamp())
    return out


@pytest.mark.parametrize("spacing", [0.0, 1.0])
def test_slots_reserved_while_the_rate_was_cut_are_replanned_when_it_recovers(
    redis_url: str, spacing: float
) -> None:
    """Calls that took slots while a 429 had cut the rate to its floor do not keep them once
    it recovers: their slots (and due times) move in, at the rate in force, in their order,
    never closer than the limit allows; a re-planned request, claimed when due, sends. With
    agent spacing, the agent's next call is spaced from the moved slot."""
    store = _aimd_store(redis_url, spacing)
    try:
        _cut_to_the_floor(store)
        ids = [_queued_for(store, f"u-{n}") for n in range(30)]
        outcomes = [_mark(store, request_id, f"u-{n}") for n, request_id in enumerate(ids)]
        waiting = [i for i, outcome in zip(ids, outcomes, strict=True) if outcome == "wait"]
        assert len(waiting) >= 25, outcomes  # about one a second: most wait for a slot
        before = _dues(store, waiting)

        time.sleep(2.0)  # the rate recovers linearly (a twentieth of the limit a second)
        assert _mark(store, _queued_for(store, "u-new"), "u-new") in ("sent", "wait")

        after = _dues(store, waiting)
        assert after[-1] <= before[-1] - 5, (before[-1], after[-1])
        assert after == sorted(after)  # the same order
        assert all(b - a >= 0.1 - 1e-6 for a, b in itertools.pairwise(after))
        assert all(a <= b + 1e-6 for a, b in zip(after, before, strict=True))  # none later

        if spacing:
            user = f"u-{ids.index(waiting[-1])}"
            request_id = _queued_for(store, user)
            answer = store.mark_sent(
                request_id, store.claim(request_id, lease_s=30).token, user=user
            )
            assert answer.reason == "agent_spacing", answer
            assert after[-1] + spacing <= answer.at <= after[-1] + 0.25 + spacing + 0.5, (
                after[-1],
                answer.at,
            )

        # The next re-planned request, once due, finds its slot near: it sends (no new wait).
        upcoming = next(
            (i, due) for i, due in zip(waiting, after, strict=True) if due > time.time()
        )
        time.sleep(max(0.0, upcoming[1] - time.time()) + 0.01)
        n = ids.index(upcoming[0])
        assert _mark(store, upcoming[0], f"u-{n}") == "sent"
    finally:
        store.redis.delete(*store.redis.keys(f"{store.ns}:*"))


def test_a_429_to_a_call_paced_before_the_cut_does_not_cut_again(redis_url: str) -> None:
    """Round trips count from when a call's slot was planned, not when it left: a call whose
    slot was reserved at the old rate, sent after the first 429 cut it, brings that cut's news
    (no second cut); a call paced after the cut that gets a 429 halves it again."""
    store = _aimd_store(redis_url)

    def claimed() -> tuple[str, str]:
        request_id = _queued_for(store, f"u-{uuid.uuid4().hex[:6]}")
        return request_id, store.claim(request_id, lease_s=30).token

    def throttled(request_id: str, token: str) -> float | None:
        return store.finish(
            request_id, token, State.RETRYING, event="will retry", slow=True, retry_in_s=60
        ).rate

    def sent(request_id: str, token: str) -> None:
        for _ in range(40):
            answer = store.mark_sent(request_id, token, user="u")
            if answer.outcome != "hold":
                break
            time.sleep(answer.seconds)
        assert answer.outcome == "sent", answer

    try:
        first, paced_with_it = claimed(), claimed()
        sent(*first)
        assert store.mark_sent(paced_with_it[0], paced_with_it[1], user="u").outcome == "hold"
        cut = throttled(*first)
        assert cut is not None and 4.5 <= cut <= 5.0
        sent(*paced_with_it)  # leaves after the cut, on a slot planned before it
        assert throttled(*paced_with_it) is None
        later = claimed()
        sent(*later)
        again = throttled(*later)
        assert again is not None and again < cut
    finally:
        store.redis.delete(*store.redis.keys(f"{store.ns}:*"))


def _slots(store: StatusStore, ids: list[str]) -> dict[str, float]:
    """The rate-limit slots these requests hold (the store's own plan; a request without one
    is left out)."""
    out = {}
    for request_id in ids:
        slot = store.redis.hget(f"{store.ns}:req:{request_id}", "slot")
        if slot:
            out[request_id] = float(slot)
    return out


def test_a_replan_keeps_clear_of_slots_held_in_a_thread_and_of_questions(
    redis_url: str,
) -> None:
    """A call holding its slot in a worker thread and a lookup's slot sit inside a backlog
    planned at a cut rate; when the rate recovers, the waiting calls are planned again around
    them: no two slots closer than the limit allows, and the held ones do not move. A waiter
    whose not_after comes before its slot is never made due past its not_after."""
    waiters = _aimd_store(redis_url)
    # The same fleet (namespace), as a worker whose thread holds a slot this far ahead.
    holding = StatusStore(
        waiters.redis,
        waiters.ns,
        idempotency_ttl_s=60,
        record_ttl_s=60,
        redeliver_after_s=60,
        pacing=Pacing(limit=10, burst=1, hold=30.0, lead=0.25),
    )
    try:
        _cut_to_the_floor(waiters)  # one call a second
        ids = [_queued_for(waiters, f"u-{n}") for n in range(8)]
        held = _queued_for(holding, "u-held")
        closing = f"r-{uuid.uuid4().hex[:8]}"
        not_after = datetime.now(UTC) + timedelta(seconds=14)
        waiters.register(
            closing,
            parse_request(
                {
                    "contact_id": closing,
                    "user_id": "u-closing",
                    "phone_number": NUMBER,
                    "not_after": not_after.isoformat(),
                }
            ),
            queue="q",
            source="producer",
        )
        later = [_queued_for(waiters, f"v-{n}") for n in range(12)]
        for request_id in ids:
            assert _mark(waiters, request_id, "u") in ("sent", "wait")
        held_claim = holding.claim(held, lease_s=60)
        assert holding.mark_sent(held, held_claim.token, user="u-held").outcome == "hold"
        _, asked = holding.take_slot()  # a lookup's slot, inside the backlog
        assert asked is not None
        for request_id in [closing, *later]:
            assert _mark(waiters, request_id, "u") == "wait"
        before = _slots(waiters, [*ids, held, closing, *later])

        time.sleep(2.0)  # the rate recovers to 1.5 times its floor, and more
        waiters.take_slot()  # any send marker or question re-plans

        after = _slots(waiters, [*ids, held, closing, *later])
        assert after[held] == before[held]
        planned = sorted([*after.values(), asked])
        assert min(b - a for a, b in itertools.pairwise(planned)) >= 0.1 - 1e-6, planned
        assert sum(after[i] for i in later) < sum(before[i] for i in later) - 5  # moved in
        record = waiters.get(closing, history=False)
        assert record is not None and record.next_attempt_at is not None
        assert record.next_attempt_at <= not_after
    finally:
        waiters.redis.delete(*waiters.redis.keys(f"{waiters.ns}:*"))


def test_a_backlog_answered_429_throughout_keeps_the_rate_down(redis_url: str) -> None:
    """A platform that refuses every call (429, no Retry-After) while a backlog waits for its
    slots: a cut spaces the whole backlog out at the cut rate, so the calls that follow are
    paced after it and their 429s cut again; the rate never climbs back while every call is
    refused (it had recovered above the first cut when only calls reserved after a cut
    counted)."""
    store = _aimd_store(redis_url)
    ids = [_queued_for(store, f"u-{n}") for n in range(15)]
    tokens = {request_id: store.claim(request_id, lease_s=60).token for request_id in ids}
    for request_id in ids:  # the first goes, the rest hold or wait for their slots
        store.mark_sent(request_id, tokens[request_id], user=request_id)
    cuts: list[float] = []
    deadline = time.monotonic() + 60
    try:
        unsent = list(ids)
        while unsent:
            assert time.monotonic() < deadline, unsent
            request_id = min(unsent, key=lambda i: _dues(store, [i])[0] if _waits(store, i) else 0)
            if _waits(store, request_id):
                time.sleep(max(0.0, _dues(store, [request_id])[0] - time.time()) + 0.01)
                claim = store.claim(request_id, lease_s=60)
                if claim.outcome != "claimed":
                    continue
                tokens[request_id] = claim.token
            answer = store.mark_sent(request_id, tokens[request_id], user=request_id)
            if answer.outcome == "hold":
                time.sleep(answer.seconds)
                answer = store.mark_sent(request_id, tokens[request_id], user=request_id)
            if answer.outcome != "sent":
                continue  # it waits (again) for its slot
            unsent.remove(request_id)
            cut = store.finish(
                request_id,
                tokens[request_id],
                State.RETRYING,
                event="will retry",
                slow=True,
                retry_in_s=600,
            ).rate
            if cut is not None:
                cuts.append(cut)
        assert len(cuts) >= 3, cuts  # each round trip's 429s cut again
        assert store.slow_down(asked_at=0.0) <= cuts[0]  # the rate in force: not recovered
    finally:
        store.redis.delete(*store.redis.keys(f"{store.ns}:*"))


def _waits(store: StatusStore, request_id: str) -> bool:
    record = store.get(request_id, history=False)
    return record is not None and record.state == State.SCHEDULED


def test_a_cut_that_moves_an_agents_call_later_keeps_the_agents_spacing(redis_url: str) -> None:
    """A cut moves an agent's waiting call seconds later; the agent's next call, enqueued
    after the old slot (plus spacing) but before the new one, is still spaced from it."""
    store = _paced_store(redis_url, limit=100, burst=1, spacing=0.5, hold=0.5, lead=0.25)
    try:
        for n in range(400):  # a backlog of four seconds: each takes its slot
            request_id = _queued_for(store, f"u-{n}")
            store.mark_sent(request_id, store.claim(request_id, lease_s=600).token, user=f"u-{n}")
        first = _queued_for(store, "agent")
        answer = store.mark_sent(first, store.claim(first, lease_s=600).token, user="agent")
        assert answer.outcome == "wait", answer
        (old,) = _slots(store, [first]).values()
        store.slow_down()  # a 429 (a busy check's): the backlog is spaced out at half the rate
        (moved,) = _slots(store, [first]).values()
        assert moved > old + 2.0, (old, moved)
        time.sleep(max(0.0, old + 0.5 + 1.2 - time.time()))  # past the old slot's spacing
        second = _queued_for(store, "agent")
        answer = store.mark_sent(second, store.claim(second, lease_s=60).token, user="agent")
        assert answer.outcome == "wait" and answer.reason == "agent_spacing", answer
        (now_at,) = _slots(store, [first]).values()  # (the rate's recovery may move it in)
        assert answer.at >= now_at + 0.5, (moved, now_at, answer.at)
    finally:
        store.redis.delete(*store.redis.keys(f"{store.ns}:*"))


def test_a_cut_with_more_waiting_than_one_pass_moves_gives_the_rest_new_slots(
    redis_url: str,
) -> None:
    """A cut spaces out the earliest 2,000 waiting calls; the ones after them had slots at
    the old rate, which the moved ones now overlap: those slots are given back (their epoch
    is no longer the limiter's, so each takes a new slot when it comes due), and the slots
    still in force are an interval of the limit apart."""
    store = _paced_store(redis_url, limit=100, burst=1, hold=0.05, lead=0.25)
    try:
        ids = _backlog(store, 3000)  # 30 s of slots
        before = _slots(store, ids)
        store.slow_down()
        slots = _slots(store, ids)
        request_id = max(before, key=before.__getitem__)  # the last: beyond the pass
        assert slots[request_id] == before[request_id]
        epoch = store.redis.hget(f"{store.ns}:limiter", "epoch") or "0"
        assert store.redis.hget(f"{store.ns}:req:{request_id}", "slot_epoch") != epoch
        in_force = _in_force(store, slots)
        assert in_force and max(in_force) > before[request_id]  # the moved overlap the rest
        assert min(b - a for a, b in itertools.pairwise(in_force)) >= 1 / 100 - 1e-6
    finally:
        store.redis.delete(*store.redis.keys(f"{store.ns}:*"))


def test_two_cuts_with_more_waiting_than_a_pass_leave_no_overlapping_slots(
    redis_url: str,
) -> None:
    """Two cuts in a row over a backlog larger than one re-spacing pass: every slot still in
    force afterwards (of the current epoch, ahead of now) is at least an interval of the
    limit from the next; none is left at the old rate among the moved ones."""
    store = _paced_store(redis_url, limit=500, burst=1, hold=0.05, lead=0.25)
    try:
        ids = _backlog(store, 2700)
        store.slow_down()
        store.slow_down()
        in_force = _in_force(store, _slots(store, ids))
        assert len(in_force) > 1000, len(in_force)
        assert min(b - a for a, b in itertools.pairwise(in_force)) >= 1 / 500 - 1e-6
    finally:
        store.redis.delete(*store.redis.keys(f"{store.ns}:*"))


def test_cuts_and_re_plans_over_and_over_keep_the_limiter_and_records_small(
    redis_url: str,
) -> None:
    """A throttle that never ends: cut after cut (each re-spacing the backlog) and questions
    between them (each may re-plan): the limiter stays one small hash, each waiting record
    keeps its few slot fields, and no key is added per cut."""
    store = _paced_store(redis_url, limit=50, burst=1, hold=0.05, lead=0.25)
    try:
        ids = _backlog(store, 200)
        keys_before = len(store.redis.keys(f"{store.ns}:*"))
        for _ in range(100):
            store.slow_down()
            store.take_slot()
        assert store.redis.hlen(f"{store.ns}:limiter") <= 12
        assert len(store.redis.keys(f"{store.ns}:*")) <= keys_before + 2
        waiting = [i for i in ids if _waits(store, i)]
        assert waiting
        assert max(store.redis.hlen(f"{store.ns}:req:{i}") for i in waiting) <= 40
        slots = _in_force(store, _slots(store, ids))
        assert all(b - a >= 1 / 50 - 1e-6 for a, b in itertools.pairwise(slots))
    finally:
        store.redis.delete(*store.redis.keys(f"{store.ns}:*"))
