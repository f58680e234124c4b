"""The fleet paces itself like one polite client: a global rate limit, per-agent spacing,
a breaker for outages, and waits that burn no attempts. Real Redis, several real worker
processes, the simulator (which enforces a rate limit of its own)."""

from __future__ import annotations

import email.utils
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from followup.cli.local_stack import Simulator, Worker, wait_until
from followup.config.settings import load_settings
from followup.tasks.producer import FollowUpClient
from followup.tasks.request import parse_request
from followup.worker.records import StatusRecord
from followup.worker.store import StatusStore
from tests.conftest import CLIENT_ID, CLIENT_SECRET, calls_for, followup, requests_for

pytestmark = pytest.mark.integration
NUMBER = "+61298765432"


class Fleet:
    """Workers with a namespace and queue of their own (their limiter, breaker and pauses
    touch no other test), against a simulator of their own, and a client for them."""

    def __init__(self, env: dict[str, str], log_dir: Path, **settings: str) -> None:
        self.sim = Simulator(
            "--client", f"{CLIENT_ID}:{CLIENT_SECRET}:conversation:write", "--any-user"
        )
        suffix = uuid.uuid4().hex[:6]
        self.env = {
            **env,
            "FOLLOWUP_NAMESPACE": f"{env['FOLLOWUP_NAMESPACE']}-pace-{suffix}",
            "FOLLOWUP_QUEUE": f"{env['FOLLOWUP_QUEUE']}-pace-{suffix}",
            "FOLLOWUP_API_BASE_URL": self.sim.url,
            **settings,
        }
        self.log_dir = log_dir
        self.workers: list[Worker] = []
        self.client = FollowUpClient(load_settings(self.env))

    def start_workers(self, count: int) -> None:
        for _ in range(count):
            name = f"pace-{len(self.workers)}-{uuid.uuid4().hex[:4]}"
            self.workers.append(Worker(self.env, name=name, log_dir=self.log_dir))

    def enqueue(self, user: str = "u-1001", contact: str | None = None) -> str:
        return self.client.enqueue(
            contact_id=contact or f"c-{uuid.uuid4().hex[:8]}", user_id=user, phone_number=NUMBER
        )

    def wait(self, request_id: str, *states: str, timeout_s: float = 30) -> StatusRecord:
        def reached() -> StatusRecord | None:
            record = self.client.status(request_id)
            return record if record and record.state in states else None

        return wait_until(reached, timeout_s, f"{request_id} in {states}", 0.1)

    def stop(self) -> None:
        for w in self.workers:
            if w.proc.poll() is None:
                w.stop()
        self.client.close()
        self.sim.stop()


@pytest.fixture
def fleet(env: dict[str, str], log_dir: Path) -> Iterator[Callable[..., Fleet]]:
    made: list[Fleet] = []

    def make(**settings: str) -> Fleet:
        made.append(Fleet(env, log_dir, **settings))
        return made[-1]

    yield make
    for f in made:
        f.stop()


def test_three_workers_keep_the_fleets_rate_limit_and_use_it(fleet: Callable[..., Fleet]) -> None:
    """40 requests queued before 3 worker processes start, at 5 a second: no second holds
    more than 5 calls (6 with clock edges), they take at least 6.5 s, the platform (which
    would answer 429 past 6 a second) never has to. How close to the limit the fleet runs is
    a speed figure: bench/pacing.py measures it, a test on a loaded machine cannot."""
    f = fleet(FOLLOWUP_RATE_LIMIT_PER_S="5")
    f.sim.set_faults(rate_limit=6)
    ids = [f.enqueue(user=f"u-{n}") for n in range(40)]
    f.start_workers(3)

    for request_id in ids:
        f.wait(request_id, "placed")
    times = sorted(c["received_at"] for c in f.sim.calls())
    assert len(times) == 40
    busiest = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert busiest <= 6, busiest
    span = times[-1] - times[0]
    assert span >= 6.5, span
    assert all(r["status"] == 201 for r in f.sim.requests())
    waited = [h for i in ids[-5:] for h in f.client.status(i).history]  # type: ignore[union-attr]
    assert "waiting for rate_limit" in [h.event for h in waited]


def test_429s_spend_no_attempts_and_an_http_date_retry_after_is_honoured(
    fleet: Callable[..., Fleet],
) -> None:
    f = fleet(FOLLOWUP_MAX_ATTEMPTS="3")
    f.start_workers(1)
    f.sim.set_faults(by_contact={"c-six": ["429"] * 6}, retry_after="1")
    six = f.enqueue(contact="c-six")
    record = f.wait(six, "placed", timeout_s=60)
    assert [r["status"] for r in requests_for(f.sim, six)] == [429] * 6 + [201]
    assert record.attempts == 1
    assert "a throttle: the fleet slows down" in f.workers[0].log()

    time.sleep(2)  # let the fleet's own pause from those 429s run out
    when = email.utils.formatdate(time.time() + 3, usegmt=True)  # a second's resolution
    f.sim.set_faults(by_contact={"c-date": ["429"]}, retry_after=when)
    dated = f.enqueue(contact="c-date")
    f.wait(dated, "placed")
    sent = requests_for(f.sim, dated)
    assert [r["status"] for r in sent] == [429, 201]
    assert sent[1]["at"] - sent[0]["at"] >= 2.0


def test_one_agent_is_spaced_and_the_others_are_not_held_back(
    fleet: Callable[..., Fleet],
) -> None:
    f = fleet(FOLLOWUP_PER_USER_INTERVAL_S="3")
    ids = [f.enqueue(user="u-busy") for _ in range(3)]
    other = f.enqueue(user="u-other")
    f.start_workers(2)

    for request_id in [*ids, other]:
        f.wait(request_id, "placed")
    busy = sorted(c["received_at"] for c in f.sim.calls() if c["user_id"] == "u-busy")
    assert len(busy) == 3
    assert busy[1] - busy[0] >= 3.0 and busy[2] - busy[1] >= 3.0
    other_at = calls_for(f.sim, other)[0]["received_at"]
    assert other_at < busy[1]  # not held behind the busy agent's spacing
    spaced = [h.event for i in ids for h in f.client.status(i).history]  # type: ignore[union-attr]
    assert "waiting for agent_spacing" in spaced


def test_a_platform_down_for_15s_fails_nothing_and_calls_each_once(
    fleet: Callable[..., Fleet],
) -> None:
    f = fleet(
        FOLLOWUP_MAX_ATTEMPTS="3", FOLLOWUP_BREAKER_FAILURES="5", FOLLOWUP_BREAKER_COOLDOWN_S="2"
    )
    f.start_workers(1)
    wait_until(lambda: f.sim.tokens()["token_requests"] > 0, 15, "the worker's first token")
    port = f.sim.port
    f.sim.stop()  # connection refused from now on
    ids = [f.enqueue(user=f"u-{n}") for n in range(15)]

    def held_by_the_breaker() -> StatusRecord | None:
        records = [f.client.status(i) for i in ids]
        return next((r for r in records if r and r.waiting_for == "breaker"), None)

    held = wait_until(held_by_the_breaker, 15, "the breaker to hold a request", 0.05)
    shown = json.loads(followup("status", held.request_id, "--json", env=f.env).stdout)
    assert "waiting_for" in shown and "next_attempt_at" in shown
    assert held.attempts == 0  # refused connections spent nothing
    time.sleep(max(0.0, 15 - 2))  # the rest of the outage
    f.sim = Simulator(
        "--client", f"{CLIENT_ID}:{CLIENT_SECRET}:conversation:write", "--any-user", port=port
    )

    for request_id in ids:
        record = f.wait(request_id, "placed", timeout_s=60)
        assert len(calls_for(f.sim, request_id)) == 1
        assert record.attempts == 1
    log = f.workers[0].log()
    assert "the breaker opens" in log and "the breaker closes" in log


def test_a_request_that_waits_too_long_is_given_up(redis_url: str) -> None:
    import redis

    store = StatusStore(
        redis.Redis.from_url(redis_url, decode_responses=True),
        f"test-wait-{uuid.uuid4().hex[:8]}",
        idempotency_ttl_s=60,
        record_ttl_s=60,
        redeliver_after_s=60,
        max_wait_s=1,
    )
    request = parse_request({"contact_id": "c-1", "user_id": "u-1", "phone_number": NUMBER})
    store.register("w-1", request, queue="q", source="producer")
    time.sleep(1.5)  # waited (for anything) past FOLLOWUP_MAX_WAIT_S
    claim = store.claim("w-1", lease_s=30)
    record = store.get("w-1")
    assert (claim.outcome, claim.state) == ("done", "failed")
    assert record is not None and record.last_error is not None
    assert record.last_error.code == "wait.exceeded"
    assert record.attempts == 0
    store.redis.delete(*store.redis.keys(f"{store.ns}:*"))


def test_the_per_number_cap_holds_across_the_fleet_and_spends_no_attempt(
    fleet: Callable[..., Fleet],
) -> None:
    """Two workers (four threads each) and five requests for one number, with a cap of two
    calls a day: exactly two are placed; the rest wait for `number_cap`, nothing spent."""
    f = fleet(FOLLOWUP_PER_NUMBER_MAX_CALLS="2", FOLLOWUP_PER_NUMBER_WINDOW_S="3600")
    ids = [f.enqueue(user=f"u-{n}") for n in range(5)]
    f.start_workers(2)
    records = [f.wait(i, "placed", "scheduled") for i in ids]
    wait_until(
        lambda: (
            sum(1 for i in ids if (r := f.client.status(i)) and r.state == "placed") == 2
            and sum(
                1
                for i in ids
                if (r := f.client.status(i))
                and r.state == "scheduled"
                and r.waiting_for == "number_cap"
            )
            == 3
        ),
        30,
        "two placed and three waiting for number_cap",
    )
    records = [r for i in ids if (r := f.client.status(i)) is not None]
    waiting = [r for r in records if r.state == "scheduled"]
    assert all(r.attempts == 0 and r.next_attempt_at is not None for r in waiting)
    assert len([c for i in ids for c in calls_for(f.sim, i)]) == 2
    shown = followup("status", waiting[0].request_id, env=f.env, check=True).stdout
    assert "number_cap" in shown and "FOLLOWUP_PER_NUMBER_MAX_CALLS" in shown
    cap = json.loads(followup("hours", NUMBER, "--json", env=f.env, check=True).stdout)
    assert (cap["number_cap"]["calls"], cap["number_cap"]["max_calls"]) == (2, 2)
    assert cap["number_cap"]["next_free"] is not None
