"""Asking Genesys Cloud instead of a person (genesys dialect, real worker, the simulator in
genesys mode): `unknown` outcomes settled by an analytics lookup, and no call to an agent
who is on another one."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from followup.cli.local_stack import Simulator, Worker, wait_until
from followup.config.settings import load_settings
from followup.tasks.outcomes import recent
from followup.tasks.producer import FollowUpClient
from followup.worker.records import StatusRecord
from tests.conftest import CLIENT_ID, CLIENT_SECRET, NOSCOPE_ID, calls_for, requests_for

pytestmark = pytest.mark.integration
NUMBER = "+61298765432"


class Genesys:
    def __init__(
        self, env: dict[str, str], start_worker: Callable[..., Worker], **settings: str
    ) -> None:
        self.sim = Simulator(
            "--dialect", "genesys", "--any-user",
            "--client", f"{CLIENT_ID}:{CLIENT_SECRET}:conversation:call:add,"
            "analytics:conversationDetail:view",
            "--client", f"{NOSCOPE_ID}:{CLIENT_SECRET}:conversation:call:add",
        )  # fmt: skip
        suffix = uuid.uuid4().hex[:6]
        self.env = {
            **env,
            "FOLLOWUP_API_DIALECT": "genesys",
            "FOLLOWUP_API_BASE_URL": self.sim.url,
            "FOLLOWUP_NAMESPACE": f"{env['FOLLOWUP_NAMESPACE']}-gen-{suffix}",
            "FOLLOWUP_QUEUE": f"{env['FOLLOWUP_QUEUE']}-gen-{suffix}",
            "FOLLOWUP_RECONCILE_AFTER_S": "1",
            "FOLLOWUP_RECONCILE_FOR_S": "4",
            "FOLLOWUP_AGENT_BUSY_RECHECK_S": "1",
            **settings,
        }
        self.worker = start_worker(**self.env)
        self.client = FollowUpClient(load_settings(self.env))

    def enqueue(self, contact: str, user: str = "u-1001") -> str:
        return self.client.enqueue(contact_id=contact, user_id=user, phone_number=NUMBER)

    def until(self, request_id: str, check: Callable[[StatusRecord], bool], what: str) -> Any:
        return wait_until(
            lambda: (r := self.client.status(request_id)) and check(r) and r, 30, what, 0.1
        )

    def close(self) -> None:
        self.client.close()
        self.sim.stop()


@pytest.fixture
def genesys(
    env: dict[str, str], start_worker: Callable[..., Worker]
) -> Iterator[Callable[..., Genesys]]:
    made: list[Genesys] = []

    def make(**settings: str) -> Genesys:
        made.append(Genesys(env, start_worker, **settings))
        return made[-1]

    yield make
    for g in made:
        g.close()


def _events(record: StatusRecord) -> list[str]:
    return [h.event for h in record.history]


def test_a_dropped_answer_is_settled_placed_by_a_lookup(genesys: Callable[..., Genesys]) -> None:
    g = genesys()
    g.sim.set_faults(by_contact={"c-drop": ["drop_after"]}, analytics_lag_s=1.5)
    request_id = g.enqueue("c-drop")  # the platform takes the call; the answer is lost

    record = g.until(request_id, lambda r: r.state == "placed", "the lookup to settle it")
    calls = calls_for(g.sim, request_id)
    assert len(calls) == 1
    assert record.conversation_id == calls[0]["id"]
    assert "settled by lookup" in _events(record)
    assert _events(record).index("outcome unknown") < _events(record).index("settled by lookup")
    stream = [o.state for o in recent(load_settings(g.env)) if o.request_id == request_id]
    assert stream == ["unknown", "placed"]


def test_a_call_that_never_reached_the_platform_stays_unknown_and_is_never_redialled(
    genesys: Callable[..., Genesys],
) -> None:
    g = genesys()
    g.sim.set_faults(by_contact={"c-lost": ["drop_before"]})
    request_id = g.enqueue("c-lost")

    record = g.until(request_id, lambda r: "lookups over" in _events(r), "the lookups to end")
    assert record.state == "unknown"
    assert _events(record).count("looked up") == 3  # after 1, 2 and 4 s (FOR_S 4)
    assert calls_for(g.sim, request_id) == []
    assert len(requests_for(g.sim, request_id)) == 1  # sent once, never again


def test_an_agent_on_a_call_gets_the_follow_up_after_it_and_others_are_not_delayed(
    genesys: Callable[..., Genesys],
) -> None:
    g = genesys()
    g.sim.set_faults(busy_users={"u-busy": 5})
    busy = g.enqueue("c-busy", user="u-busy")
    free = g.enqueue("c-free", user="u-free")

    waiting = g.until(busy, lambda r: r.waiting_for == "agent_busy", "it to wait")
    assert waiting.attempts == 0
    placed = g.until(busy, lambda r: r.state == "placed", "it to be placed")
    assert placed.attempts == 1
    free_at = calls_for(g.sim, free)[0]["received_at"]
    busy_at = calls_for(g.sim, busy)[0]["received_at"]
    assert free_at < busy_at  # the free agent's call did not wait behind the busy one
    assert "waiting for agent_busy" in _events(placed)


def test_without_analytics_permission_reconciliation_stops_and_says_which(
    genesys: Callable[..., Genesys],
) -> None:
    g = genesys(FOLLOWUP_CLIENT_ID=NOSCOPE_ID)
    g.sim.set_faults(by_contact={"c-drop": ["drop_after"]})
    request_id = g.enqueue("c-drop")
    g.until(request_id, lambda r: r.state == "unknown", "unknown")
    wait_until(
        lambda: "reconciliation is off until restart" in g.worker.log(), 15, "the 403 logged"
    )
    log = g.worker.log()
    assert "analytics:conversationDetail:view" in log
    assert log.count("reconciliation is off until restart") == 1
    assert g.client.status(request_id).state == "unknown"  # type: ignore[union-attr]


def test_a_lookup_never_settles_a_request_with_another_requests_call(
    genesys: Callable[..., Genesys],
) -> None:
    """Agent U, two follow-ups to the same number: the first is placed; the second's
    connection drops before the platform gets it. Its lookups find only the first's call."""
    g = genesys()
    g.sim.set_faults(by_contact={"c-second": ["drop_before"]})
    first = g.enqueue("c-first")
    placed = g.until(first, lambda r: r.state == "placed", "the first to be placed")
    second = g.enqueue("c-second")

    record = g.until(second, lambda r: "lookups over" in _events(r), "the lookups to end")
    assert record.state == "unknown"
    assert record.conversation_id is None
    assert placed.conversation_id == calls_for(g.sim, first)[0]["id"]
    assert calls_for(g.sim, second) == []


def test_lookups_outlast_throttles_outages_odd_answers_and_large_pages(
    genesys: Callable[..., Genesys],
) -> None:
    """Analytics answers 429 (with Retry-After), 503, then JSON of another shape and JSON
    nested 5000 deep (json.loads alone raises RecursionError on it), and every
    page is padded with the agent's other calls (over 64 KiB at the old page size): no lookup
    is spent on them, the 429 slows the fleet, and the call is found once analytics answers."""
    g = genesys(FOLLOWUP_RECONCILE_AFTER_S="0.5", FOLLOWUP_RECONCILE_FOR_S="2")  # 3 lookups
    g.sim.set_faults(
        by_contact={"c-drop": ["drop_after"]},
        analytics_script=["429", "503", "odd_shape", "deep", "500"],
        analytics_padding=40,
        retry_after="1",
    )
    request_id = g.enqueue("c-drop")

    record = g.until(request_id, lambda r: r.state == "placed", "the lookup to settle it")
    assert record.conversation_id == calls_for(g.sim, request_id)[0]["id"]
    assert _events(record).count("lookup failed") == 5
    assert "lookups over" not in _events(record)
    statuses = [q["status"] for q in g.sim.queries() if q["endpoint"] == "analytics"]
    assert statuses == [429, 503, 200, 200, 500, 200]  # the odd and deep shapes with a 200
    rate = g.client.store.redis.hget(f"{g.env['FOLLOWUP_NAMESPACE']}:limiter", "rate")
    assert rate is not None and float(rate) < 1000  # FOLLOWUP_RATE_LIMIT_PER_S, halved
    assert "reconciliation pass failed" not in g.worker.log()


def test_a_busy_check_that_gets_no_answer_waits_and_never_rings_a_busy_agent(
    genesys: Callable[..., Genesys],
) -> None:
    g = genesys()
    asked_at = time.time()
    g.sim.set_faults(busy_users={"u-busy": 4}, availability_script=["429", "503"])
    request_id = g.enqueue("c-busy", user="u-busy")

    record = g.until(request_id, lambda r: r.state == "placed", "it to be placed")
    assert calls_for(g.sim, request_id)[0]["received_at"] >= asked_at + 4  # not while busy
    assert record.attempts == 1
    events = _events(record)
    assert events.count("waiting for availability") == 2
    assert "waiting for agent_busy" in events
    statuses = [q["status"] for q in g.sim.queries() if q["endpoint"] == "availability"]
    assert statuses[:2] == [429, 503]
    rate = g.client.store.redis.hget(f"{g.env['FOLLOWUP_NAMESPACE']}:limiter", "rate")
    assert rate is not None and float(rate) < 1000  # the 429 slowed the fleet


def test_busy_checks_take_fleet_slots_and_are_asked_once_an_attempt(
    genesys: Callable[..., Genesys],
) -> None:
    """Six agents, a fleet limit of 2/s and a platform that takes 5 requests/s per token:
    each request asks once, a request that waits for its call's slot is not asked again, and
    the platform never throttles the fleet."""
    g = genesys(FOLLOWUP_RATE_LIMIT_PER_S="2")
    g.sim.set_faults(token_rate_limit=5, rate_window_s=2)
    ids = [g.enqueue(f"c-{n}", user=f"u-{n}") for n in range(6)]

    for request_id in ids:
        g.until(request_id, lambda r: r.state == "placed", "every request to be placed")
    asks = [q for q in g.sim.queries() if q["endpoint"] == "availability"]
    assert sorted(q["user"] for q in asks) == [f"u-{n}" for n in range(6)]
    assert [q["status"] for q in asks] == [200] * 6
    assert [r["status"] for r in g.sim.requests()] == [201] * 6


def test_a_throttle_longer_than_the_schedule_delays_the_lookups_instead_of_spending_them(
    genesys: Callable[..., Genesys],
) -> None:
    """Lookups at 1, 2, 4 and 8 s (AFTER 1, FOR 8); the first is throttled for 6 s, and the
    call shows in analytics only 12 s after it was made. Each lookup waits its interval
    after the one before, so the last goes after the call shows (were they anchored to when
    the request became unknown, the remaining three would go back to back at about 7 s)."""
    g = genesys(FOLLOWUP_RECONCILE_AFTER_S="1", FOLLOWUP_RECONCILE_FOR_S="8")
    g.sim.set_faults(
        by_contact={"c-drop": ["drop_after"]},
        analytics_script=["429"],
        retry_after="6",
        analytics_lag_s=12,
    )
    request_id = g.enqueue("c-drop")

    record = g.until(
        request_id,
        lambda r: r.state == "placed" or "lookups over" in _events(r),
        "the lookups to settle it or end",
    )
    assert record.state == "placed", _events(record)
    assert record.conversation_id == calls_for(g.sim, request_id)[0]["id"]
    assert _events(record).count("lookup failed") == 1


def test_a_lookup_without_a_token_waits_for_one_and_spends_nothing(
    genesys: Callable[..., Genesys],
) -> None:
    """The token endpoint answers a token nested 5000 deep (json.loads alone raises
    RecursionError) when the lookup needs a new one: the lookup waits for a token, no pass
    fails, and the call is found once a token is had."""
    g = genesys(FOLLOWUP_RECONCILE_FOR_S="8")
    g.sim.set_faults(by_contact={"c-drop": ["drop_after"]}, analytics_lag_s=3)
    request_id = g.enqueue("c-drop")
    g.until(request_id, lambda r: r.state == "unknown", "the outcome to be unknown")
    g.sim.set_faults(token_script=["token_deep"] * 3)  # the call was made; analytics lags no more
    g.sim.expire_tokens()  # the next lookup gets a 401, then asks for a new token

    record = g.until(request_id, lambda r: r.state == "placed", "the lookup to settle it")
    assert record.conversation_id == calls_for(g.sim, request_id)[0]["id"]
    assert "lookups over" not in _events(record)
    assert g.sim.tokens()["token_requests"] >= 5  # the first, the three deep ones, a good one
    assert "reconciliation pass failed" not in g.worker.log()
    assert "RecursionError" not in g.worker.log()


def test_an_availability_answer_nested_too_deep_lets_the_call_go(
    genesys: Callable[..., Genesys],
) -> None:
    """[[[...]]] 5000 deep from the busy check: the platform cannot say (docs/platforms.md),
    so the call goes, once; the request does not fail."""
    g = genesys()
    g.sim.set_faults(availability_script=["deep"])
    request_id = g.enqueue("c-deep")

    record = g.until(request_id, lambda r: r.state == "placed", "it to be placed")
    assert record.attempts == 1
    assert len(calls_for(g.sim, request_id)) == 1
    assert "RecursionError" not in g.worker.log()
