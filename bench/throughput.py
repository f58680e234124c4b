"""End to end: follow-ups placed per second by real workers, and their latency.

    .venv/bin/python bench/throughput.py [REQUESTS] [WORKERS] [CONCURRENCY] [BROKERS]

Enqueues REQUESTS with enqueue_many, starts WORKERS worker processes (CONCURRENCY threads
each) against the simulator, and times until every request is placed; latency is a
request's created_at to its placed time in the status store. Baseline in the same run:
the same number of create-call POSTs sent straight from CONCURRENCY x WORKERS threads with
one httpx client (no broker, no store): the ceiling the pipeline's overhead is measured
against. BROKERS (default `redis`; `redis,rabbitmq` for both, one after the other in the same
run) picks the broker; the status store is Redis either way. RabbitMQ is
FOLLOWUP_TEST_RABBITMQ_URL (default amqp://guest:guest@127.0.0.1:5672//), a quorum queue.
Loopback only; bounded in time.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
import uuid

from direct import direct_posts

from followup.cli.local_stack import Stack, delete_broker_queue
from followup.tasks.producer import FollowUpClient

REQUESTS = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
WORKERS = int(sys.argv[2]) if len(sys.argv) > 2 else 1
CONCURRENCY = int(sys.argv[3]) if len(sys.argv) > 3 else 8
BROKERS = (sys.argv[4] if len(sys.argv) > 4 else "redis").split(",")
RABBITMQ_URL = os.environ.get("FOLLOWUP_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")
DEADLINE_S = 300.0


def main() -> int:
    url = os.environ.get("FOLLOWUP_REDIS_URL", "redis://localhost:6379/0")
    run = f"tput-{uuid.uuid4().hex[:6]}"
    unpaced = {  # capacity, not policy: no rate limit, no spacing, no calling hours
        "FOLLOWUP_WORKER_CONCURRENCY": str(CONCURRENCY),
        "FOLLOWUP_RATE_LIMIT_PER_S": "10000",
        "FOLLOWUP_PER_USER_INTERVAL_S": "0",
        "FOLLOWUP_PER_NUMBER_MAX_CALLS": "0",
        "FOLLOWUP_ENFORCE_CALLING_HOURS": "false",
    }
    with Stack(run, url, "--any-user", **unpaced) as stack:
        return measure(stack)


def measure(stack: Stack) -> int:
    sim = stack.sim
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, CPython "
        f"{platform.python_version()}; {REQUESTS} requests, {WORKERS} worker(s) x "
        f"{CONCURRENCY} threads"
    )
    seconds = direct_posts(sim.url, REQUESTS, WORKERS * CONCURRENCY)
    print(
        f"baseline: direct POSTs, {WORKERS * CONCURRENCY} threads   "
        f"{REQUESTS / seconds:7.0f} calls/s"
    )
    ok = True
    for broker in BROKERS:
        url = {"redis": stack.redis_url, "rabbitmq": RABBITMQ_URL}[broker]
        try:
            env = {"FOLLOWUP_BROKER_URL": url, "FOLLOWUP_NAMESPACE": f"{stack.run}-{broker}"}
            ok = over(stack, broker, env) and ok
        finally:
            delete_broker_queue(stack.settings(FOLLOWUP_BROKER_URL=url))
    return 0 if ok else 1


def over(stack: Stack, broker: str, env: dict[str, str]) -> bool:
    """Enqueue the backlog through `broker`, start the workers, time until all are placed."""
    sim = stack.sim
    sim.reset()
    client = FollowUpClient(stack.settings(**env))
    ids = client.enqueue_many(
        [
            {"contact_id": f"c-{i}", "user_id": "u-1", "phone_number": "+61298765432"}
            for i in range(REQUESTS)
        ]
    )
    started = time.monotonic()
    workers = [stack.start_worker(f"{broker}-{n}", **env) for n in range(WORKERS)]
    ready = time.monotonic()
    store = client.store
    while time.monotonic() - started < DEADLINE_S:
        if store.counts()["placed"] >= REQUESTS:
            break
        time.sleep(0.2)
    elapsed = time.monotonic() - ready
    for worker in workers:
        worker.stop()
    records = [store.get(i, history=False) for i in ids]
    placed = [r for r in records if r and r.state == "placed"]
    calls = len(sim.calls())
    print(
        f"followup over {broker:8}: enqueued -> placed {len(placed) / elapsed:7.0f} calls/s "
        f"({len(placed)} placed, {calls} calls, {elapsed:.1f}s after workers were ready)"
    )
    # From when a worker could first take it (the backlog waited for the workers to start).
    ready_at = time.time() - (time.monotonic() - ready)
    waits = sorted(
        max(0.0, r.updated_at.timestamp() - max(r.created_at.timestamp(), ready_at)) for r in placed
    )
    if waits:
        p95 = waits[int(0.95 * (len(waits) - 1))]
        print(
            f"  time in system (backlog of {REQUESTS}): median {statistics.median(waits):.2f}s,"
            f" p95 {p95:.2f}s"
        )
    client.close()
    return len(placed) == REQUESTS and calls == REQUESTS


if __name__ == "__main__":
    sys.exit(main())
