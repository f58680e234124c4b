"""The numbers an operator reads agree with the records: `followup stats --json` and a
worker's `/metrics`, after a crash, retries, lookups, a failure and a person's retry.

One request is counted once, under the outcome it has now; a request that was unknown and
then placed by a lookup counts as placed, and as settled by lookup."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable

import httpx
import pytest

from followup.cli.local_stack import Worker, free_port, wait_until
from followup.worker.records import StatusRecord
from tests.conftest import calls_for, followup, requests_for
from tests.test_reconcile import Genesys, genesys  # noqa: F401 (the fixture)

pytestmark = pytest.mark.integration
OUTCOMES = ("placed", "failed", "unknown", "cancelled", "rejected")
# A 4 s read timeout leaves time to kill a worker while its call is in flight, even on a
# loaded machine; the lease must be longer than four of them.
SLOW = {"FOLLOWUP_HTTP_TIMEOUT_S": "4", "FOLLOWUP_CLAIM_LEASE_S": "17"}


def _went_through(record: StatusRecord, state: str) -> bool:
    return any(h.state == state for h in record.history)


def _metrics(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("followup_")
    }


@pytest.mark.timeout(300)  # a crash, then its lease to run out, then lookups
def test_stats_and_metrics_agree_with_the_records_after_crashes_retries_and_lookups(
    genesys: Callable[..., Genesys],  # noqa: F811
    start_worker: Callable[..., Worker],
) -> None:
    g = genesys(**SLOW)
    sim = g.sim
    # A worker dies while the platform holds its call: the next worker's sweeper finds the
    # claim's lease run out after sending (unknown), and its reconciler finds the call.
    sim.set_faults(
        by_contact={
            "c-crash": ["hang"],
            "c-retry-1": ["500"],
            "c-retry-2": ["500"],
            "c-lookup-1": ["drop_after"],
            "c-lookup-2": ["drop_after"],
            "c-lost": ["drop_before"],
            "c-failed": ["400"],
            "c-failed-then-retried": ["400"],
        },
        hang_s=30,
        analytics_lag_s=1,
    )

    def enqueue(contact: str) -> str:
        return g.enqueue(contact, user=f"u-{contact}")  # a lookup finds only its own call

    crashed = enqueue("c-crash")
    wait_until(lambda: calls_for(sim, crashed), 20, "the platform to hold the call")
    g.worker.kill()

    port = free_port()
    worker = start_worker(**g.env, FOLLOWUP_METRICS_PORT=str(port))
    contacts = ["c-1", "c-2", "c-3", "c-retry-1", "c-retry-2", "c-lookup-1", "c-lookup-2"]
    ids = [crashed, *(enqueue(c) for c in contacts)]
    lost, failed, retried = (
        enqueue("c-lost"),
        enqueue("c-failed"),
        enqueue("c-failed-then-retried"),
    )
    ids += [lost, failed, retried]

    g.until(retried, lambda r: r.state == "failed", "the 400")
    assert followup("retry", retried, "--by", "ops", env=g.env).returncode == 0
    g.until(lost, lambda r: any(h.event == "lookups over" for h in r.history), "lookups over")
    for request_id in ids:
        if request_id not in (lost, failed):
            g.until(request_id, lambda r: r.state == "placed", f"{request_id} placed")
    g.until(failed, lambda r: r.state == "failed", "the failure")

    records = [g.client.status(i) for i in ids]
    assert all(records)
    now = Counter(r.state for r in records if r)
    assert now == {"placed": 9, "failed": 1, "unknown": 1}
    by_lookup = sum(
        1 for r in records if r and any(h.event == "settled by lookup" for h in r.history)
    )
    assert by_lookup == 3  # two answers dropped, and the crashed worker's call
    crash_record = g.client.status(crashed)
    assert crash_record and "claim expired after sending" in [h.event for h in crash_record.history]

    figures = json.loads(followup("stats", "--json", env=g.env, check=True).stdout)
    assert {s: n for s, n in figures["requests_now"].items() if n} == now
    assert figures["outcomes_last_hour"] == {s: now.get(s, 0) for s in OUTCOMES}
    assert figures["settled_by_lookup_last_hour"] == by_lookup
    # Outcomes reached, ever (fleet-wide): an unknown later placed counts under both.
    reached = {s: sum(1 for r in records if r and _went_through(r, s)) for s in OUTCOMES}
    assert figures["outcomes_total"] == reached
    assert figures["settled_by_lookup_total"] == by_lookup

    m = _metrics(port)
    for state in OUTCOMES:
        assert m.get(f'followup_fleet_requests{{state="{state}"}}', 0) == now.get(state, 0)
        assert m[f'followup_fleet_outcomes_last_hour{{outcome="{state}"}}'] == now.get(state, 0)
        assert m[f'followup_fleet_outcomes_total{{outcome="{state}"}}'] == reached[state]
    assert m["followup_fleet_settled_by_lookup_last_hour"] == by_lookup
    assert m["followup_fleet_settled_by_lookup_total"] == by_lookup
    # Create-call requests this worker sent: all but the crashed worker's one.
    assert m["followup_attempts_total"] == sum(len(requests_for(sim, i)) for i in ids) - 1
    worker.stop()
