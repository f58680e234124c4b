"""Operating it: `followup stats`, `followup worker-check`, Prometheus metrics from a real
worker, JSON logs, and the outcome stream producers read."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest

from followup.cli.local_stack import Simulator, Worker, free_port, wait_until
from followup.config.settings import load_settings
from followup.tasks.producer import FollowUpClient
from tests.conftest import followup, unique

pytestmark = pytest.mark.integration
NUMBER = "+61298765487"


class Ops:
    """A worker (JSON logs, metrics served) in a namespace and queue of its own."""

    def __init__(self, env: dict[str, str], start_worker: Callable[..., Worker]) -> None:
        suffix = uuid.uuid4().hex[:6]
        self.metrics_port = free_port()
        self.env = {
            **env,
            "FOLLOWUP_NAMESPACE": f"{env['FOLLOWUP_NAMESPACE']}-ops-{suffix}",
            "FOLLOWUP_QUEUE": f"{env['FOLLOWUP_QUEUE']}-ops-{suffix}",
            "FOLLOWUP_METRICS_PORT": str(self.metrics_port),
            "FOLLOWUP_LOG_FORMAT": "json",
            "FOLLOWUP_LOG_LEVEL": "INFO",
        }
        self.worker = start_worker(**self.env)
        self.client = FollowUpClient(load_settings(self.env))

    def run_a_few(self, sim: Simulator) -> dict[str, str]:
        """Three placed, one failed (400), one unknown (the platform hangs)."""
        contacts = {unique(): "placed" for _ in range(3)}
        failed, unknown = unique(), unique()
        contacts |= {failed: "failed", unknown: "unknown"}
        sim.set_faults(by_contact={failed: ["400"], unknown: ["hang"]}, hang_s=3)
        ids = {
            self.client.enqueue(contact_id=c, user_id="u-1001", phone_number=NUMBER): state
            for c, state in contacts.items()
        }
        for request_id, state in ids.items():
            wait_until(
                lambda i=request_id, s=state: (r := self.client.status(i)) and r.state == s,
                20,
                f"{request_id} {state}",
            )
        return ids


@pytest.fixture
def ops(env: dict[str, str], start_worker: Callable[..., Worker]) -> Iterator[Ops]:
    o = Ops(env, start_worker)
    yield o
    o.client.close()


def test_stats_counts_a_small_real_run(ops: Ops, sim: Simulator) -> None:
    ops.run_a_few(sim)
    figures = json.loads(followup("stats", "--json", env=ops.env, check=True).stdout)
    assert figures["requests_now"]["placed"] == 3
    assert figures["requests_now"]["failed"] == 1
    assert figures["requests_now"]["unknown"] == 1
    assert figures["outcomes_last_hour"] == {
        "placed": 3,
        "failed": 1,
        "unknown": 1,
        "cancelled": 0,
        "rejected": 0,
    }
    assert 0 < figures["enqueue_to_placed_p50_s"] <= figures["enqueue_to_placed_p95_s"] < 30
    assert figures["queue"] == {"name": ops.env["FOLLOWUP_QUEUE"], "messages": 0}
    assert any(name.startswith(ops.worker.name) for name in figures["workers"])
    assert figures["breaker"]["state"] == "closed"
    table = followup("stats", env=ops.env, check=True).stdout
    assert "outcomes, last hour" in table and "placed 3" in table


def test_worker_check_passes_with_a_worker_and_fails_without(ops: Ops) -> None:
    ok = followup("worker-check", env=ops.env)
    assert ok.returncode == 0, ok.stderr
    assert ops.worker.name in ok.stdout
    here = followup("worker-check", "--this-host", env=ops.env)
    assert here.returncode == 0, here.stderr

    nobody = {**ops.env, "FOLLOWUP_QUEUE": f"{ops.env['FOLLOWUP_QUEUE']}-nobody"}
    failed = followup("worker-check", "--timeout", "1", env=nobody)
    assert failed.returncode == 1
    assert len(failed.stderr.strip().splitlines()) == 1
    assert "no worker consumes queue" in failed.stderr


def test_a_real_workers_metrics_count_its_calls_and_show_no_numbers(
    ops: Ops, sim: Simulator
) -> None:
    ops.run_a_few(sim)
    text = httpx.get(f"http://127.0.0.1:{ops.metrics_port}/metrics", timeout=5).text

    def value(line_start: str) -> float:
        line = next(x for x in text.splitlines() if x.startswith(line_start))
        return float(line.rsplit(" ", 1)[1])

    assert value('followup_fleet_outcomes_total{outcome="placed"}') == 3
    assert value('followup_fleet_outcomes_total{outcome="failed"}') == 1
    assert value('followup_fleet_outcomes_total{outcome="unknown"}') == 1
    assert value("followup_attempts_total") == 5
    assert (
        value('followup_api_request_duration_seconds_count{endpoint="call",status_class="2xx"}')
        == 3
    )
    assert value('followup_fleet_requests{state="placed"}') == 3
    assert value("followup_fleet_breaker_open") == 0
    assert 'followup_token_fetches_total{result="granted"}' in text
    for form in (NUMBER, NUMBER[1:], NUMBER[-8:]):
        assert form not in text
    assert "u-1001" not in text and "request_id" not in text  # no ids as labels


def test_json_logs_carry_request_id_attempt_state_status_and_latency(
    ops: Ops, sim: Simulator
) -> None:
    ids = ops.run_a_few(sim)
    events = []
    for line in ops.worker.log().splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    about_requests = [e for e in events if e.get("request_id") in ids]
    assert about_requests
    for event in about_requests:
        assert "attempt" in event and "state" in event, event
    answered = [e for e in about_requests if e["event"] == "transition" and e.get("status")]
    assert {e["status"] for e in answered} >= {201, 400}
    assert all(isinstance(e["latency_ms"], int) for e in answered)


CONSUMER = """
import os, sys
from followup import outcomes
from followup.config.settings import load_settings
group, name, victim = sys.argv[1], sys.argv[2], sys.argv[3]
for outcome in outcomes(group=group, consumer=name, settings=load_settings(os.environ),
                        start="0", claim_idle_s=1, block_s=0.5, idle_timeout_s=4):
    if outcome.request_id == victim:
        os._exit(1)  # dies while handling it: never acknowledged
    print(outcome.request_id, outcome.state, flush=True)
"""


def test_two_consumers_of_the_outcome_stream_each_outcome_handled_once(
    ops: Ops, sim: Simulator
) -> None:
    ids = ops.run_a_few(sim)
    stream = json.loads(_lines(followup("outcomes", "--json", env=ops.env, check=True)))
    assert {o["request_id"] for o in stream} == set(ids)
    assert all(o["state"] == ids[o["request_id"]] for o in stream)
    assert all("phone" not in o for o in stream)
    victim = stream[2]["request_id"]  # the first consumer dies on the third

    first = subprocess.run(
        [sys.executable, "-c", CONSUMER, "crm", "a", victim],
        env=ops.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    second = subprocess.run(
        [sys.executable, "-c", CONSUMER, "crm", "b", "none"],
        env=ops.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert first.returncode == 1  # it died
    handled_a = [line.split()[0] for line in first.stdout.splitlines()]
    handled_b = [line.split()[0] for line in second.stdout.splitlines()]
    assert handled_a == [o["request_id"] for o in stream[:2]]
    assert sorted(handled_a + handled_b) == sorted(ids)  # each once, the victim's too
    assert victim in handled_b


def _lines(result: subprocess.CompletedProcess[str]) -> str:
    return "[" + ",".join(result.stdout.strip().splitlines()) + "]"
