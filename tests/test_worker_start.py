"""A worker's background loops start whatever happens to its metrics: two workers on one
host that share FOLLOWUP_METRICS_PORT both sweep, and `followup worker-check` fails for a
worker whose sweeper is not running."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx
import pytest

from followup.cli.local_stack import Simulator, Worker, free_port, wait_until
from followup.config.settings import load_settings
from followup.tasks.producer import FollowUpClient
from tests.conftest import calls_for, followup, unique

pytestmark = pytest.mark.integration


def _own(env: dict[str, str], **extra: str) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:6]
    return {
        **env,
        "FOLLOWUP_NAMESPACE": f"{env['FOLLOWUP_NAMESPACE']}-start-{suffix}",
        "FOLLOWUP_QUEUE": f"{env['FOLLOWUP_QUEUE']}-start-{suffix}",
        **extra,
    }


def test_two_workers_sharing_a_metrics_port_both_sweep(
    env: dict[str, str], start_worker: Callable[..., Worker], sim: Simulator
) -> None:
    port = free_port()
    own = _own(env, FOLLOWUP_METRICS_PORT=str(port))
    first = start_worker(**own)
    second = start_worker(**own)
    wait_until(lambda: "metrics" in second.log(), 10, "the second worker's word on metrics")
    assert "Signal handler" not in second.log(), second.log()
    clash = [line for line in second.log().splitlines() if "in use" in line]
    assert len(clash) == 1, second.log()
    assert "FOLLOWUP_METRICS_PORT" in clash[0]
    # Each serves its metrics somewhere it says; the first on the port it was given.
    assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 200

    first.stop()
    client = FollowUpClient(load_settings(own))
    try:
        contact = unique()
        sim.set_faults(by_contact={contact: ["500"]})
        request_id = client.enqueue(
            contact_id=contact, user_id="u-1001", phone_number="+61298765432"
        )
        # Its retry is a due time in the store: only a sweeper publishes it again.
        wait_until(
            lambda: (r := client.status(request_id)) and r.state == "placed",
            30,
            f"{request_id} placed on its second attempt",
        )
        assert len(calls_for(sim, request_id)) == 1
        check = followup("worker-check", env=own)
        assert check.returncode == 0, check.stderr
    finally:
        client.close()


def test_worker_check_fails_for_a_worker_whose_sweeper_is_not_running(
    env: dict[str, str], start_worker: Callable[..., Worker]
) -> None:
    # A sweeper that passes once a minute: after its heartbeat is gone, none comes for a while.
    own = _own(env, FOLLOWUP_SWEEP_INTERVAL_S="60")
    worker = start_worker(**own)
    client = FollowUpClient(load_settings(own))
    try:
        ok = followup("worker-check", env=own)
        assert ok.returncode == 0, ok.stderr
        beats = client.store.redis.keys(f"{client.store.ns}:sweeper:*")
        assert len(beats) == 1, beats
        client.store.redis.delete(*beats)
        failed = followup("worker-check", env=own)
        assert failed.returncode == 1, failed.stdout
        assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr
        assert worker.name in failed.stderr and "sweeper" in failed.stderr
    finally:
        client.close()
