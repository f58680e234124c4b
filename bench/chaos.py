"""Chaos run: many requests, a flaky platform, workers killed with SIGKILL at random.

    .venv/bin/python bench/chaos.py [REQUESTS] [FAILURE_RATE] [KILLS] [SEED]

Defaults: 500 requests, 20% of create-call attempts fail (503, 429 with Retry-After, or a
hang the worker's read timeout cuts off: the platform took the call but never answered),
two workers, one of them killed with SIGKILL three times at random moments and restarted.
Pass when: no request was called twice (simulator, by correlation id), every placed request
was called exactly once, and every request ends terminal (or pending with a next attempt
time). Loopback only; every loop is bounded in count and time. Exit 0 on pass.

CHAOS_DIALECT=genesys runs it against the simulator in genesys mode, with reconciliation:
it then also waits for the lookups and reports the `unknown` left, split by whether the
platform holds the call (those a lookup should have settled) or not.

CHAOS_BROKER=rabbitmq runs it over RabbitMQ (FOLLOWUP_TEST_RABBITMQ_URL, default
amqp://guest:guest@127.0.0.1:5672//; a quorum queue) instead of Redis; the status store is
Redis either way.
"""

from __future__ import annotations

import os
import platform
import random
import sys
import time
import uuid
from collections import Counter

from followup.cli.local_stack import Stack
from followup.tasks.producer import FollowUpClient
from followup.worker.records import TERMINAL_STATES

REQUESTS = int(sys.argv[1]) if len(sys.argv) > 1 else 500
RATE = float(sys.argv[2]) if len(sys.argv) > 2 else 0.2
KILLS = int(sys.argv[3]) if len(sys.argv) > 3 else 3
SEED = int(sys.argv[4]) if len(sys.argv) > 4 else 7
DEADLINE_S = 300.0
DIALECT = os.environ.get("CHAOS_DIALECT", "conversations")
BROKER = os.environ.get("CHAOS_BROKER", "redis")
RABBITMQ_URL = os.environ.get("FOLLOWUP_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")
PENDING = {"queued", "scheduled", "retrying"}


def main() -> int:
    rng = random.Random(SEED)
    url = os.environ.get("FOLLOWUP_REDIS_URL", "redis://localhost:6379/0")
    settings = {
        "FOLLOWUP_HTTP_TIMEOUT_S": "1",
        "FOLLOWUP_CLAIM_LEASE_S": "5",
        "FOLLOWUP_REDELIVER_AFTER_S": "5",
        "FOLLOWUP_SWEEP_INTERVAL_S": "0.2",
        "FOLLOWUP_BACKOFF_BASE_S": "0.1",
        "FOLLOWUP_BACKOFF_MAX_S": "1",
        "FOLLOWUP_MAX_ATTEMPTS": "8",
        "FOLLOWUP_WORKER_CONCURRENCY": "8",
        # Pacing is on, at a rate this machine can feed (RATE_LIMIT below, a second), and
        # without per-agent spacing: the run is about crashes and a flaky platform.
        "FOLLOWUP_RATE_LIMIT_PER_S": os.environ.get("CHAOS_RATE_LIMIT", "100"),
        "FOLLOWUP_PER_USER_INTERVAL_S": "0",
        "FOLLOWUP_PER_NUMBER_MAX_CALLS": "0",
        # The run dials Sydney numbers at any hour: calling hours are not what it measures.
        "FOLLOWUP_ENFORCE_CALLING_HOURS": "false",
    }
    sim_args = ["--any-user"]
    if DIALECT == "genesys":
        sim_args += ["--dialect", "genesys"]
        settings |= {
            "FOLLOWUP_API_DIALECT": "genesys",
            "FOLLOWUP_RECONCILE_AFTER_S": "1",
            "FOLLOWUP_RECONCILE_FOR_S": "16",
        }
    if BROKER == "rabbitmq":
        settings["FOLLOWUP_BROKER_URL"] = RABBITMQ_URL
    with Stack(f"chaos-{uuid.uuid4().hex[:6]}", url, *sim_args, **settings) as stack:
        return chaos(stack, rng)


def chaos(stack: Stack, rng: random.Random) -> int:
    client = FollowUpClient(stack.settings())
    sim = stack.sim
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, CPython "
        f"{platform.python_version()}; broker {BROKER}; {REQUESTS} requests, "
        f"failure rate {RATE:.0%}, "
        f"{KILLS} kills, seed {SEED}; logs in {stack.log_dir}"
    )
    workers = [stack.start_worker("a"), stack.start_worker("b")]
    sim.set_faults(rate=RATE, kinds=["503", "429", "hang"], retry_after="1", hang_s=3, seed=SEED)
    started = time.monotonic()
    ids = client.enqueue_many(
        [
            {
                "contact_id": f"c-{i}",
                "user_id": f"u-{i % 50}",
                "phone_number": "+61298765432",
                "idempotency_key": f"{stack.run}-{i}",
            }
            for i in range(REQUESTS)
        ]
    )
    store = client.store
    for restarts, at in enumerate(sorted(rng.uniform(0.5, 5.0) for _ in range(KILLS)), 1):
        time.sleep(max(0.0, started + at - time.monotonic()))
        victim = rng.randrange(len(workers))
        workers[victim].kill()
        workers[victim] = stack.start_worker(f"r{restarts}")
        print(
            f"  t={time.monotonic() - started:5.1f}s killed worker {victim} (SIGKILL), "
            f"restarted; states {store.counts()}"
        )

    while time.monotonic() - started < DEADLINE_S:
        if sum(store.counts()[s] for s in TERMINAL_STATES) >= REQUESTS:
            break
        time.sleep(0.5)
    elapsed = time.monotonic() - started

    records = [store.get(i, history=False) for i in ids]
    states = Counter(r.state if r else "missing" for r in records)
    per_request = Counter(c["correlation_id"] for c in sim.calls())
    duplicates = sum(1 for n in per_request.values() if n > 1)
    placed = {r.request_id for r in records if r and r.state == "placed"}
    placed_once = sum(1 for i in placed if per_request.get(i) == 1)
    lost = [
        r
        for r in records
        if r is None
        or (r.state not in TERMINAL_STATES and not (r.state in PENDING and r.next_attempt_at))
    ]
    attempts = Counter(r["status"] for r in sim.requests())

    print(f"settled in {elapsed:.1f}s: states {dict(states)}")
    print(
        f"create-call attempts by answer: {dict(sorted(attempts.items()))} (a hang counts as "
        "201: the platform took the call; the worker's read timeout cut it off)"
    )
    print(
        f"simulator calls: {sum(per_request.values())} for {len(per_request)} requests; "
        f"requests called more than once: {duplicates}"
    )
    print(
        f"placed: {len(placed)}, each called exactly once: {placed_once}; "
        f"without a terminal or pending state: {len(lost)}"
    )
    ok = duplicates == 0 and placed_once == len(placed) and not lost
    if DIALECT == "genesys":
        ok = reconciled(client, ids, per_request) and ok
    print("chaos run " + ("PASSED" if ok else "FAILED"))
    return 0 if ok else 1


def reconciled(client: FollowUpClient, ids: list[str], per_request: Counter[str]) -> bool:
    """Wait for the lookups (bounded), then: how many `unknown` are left, and of those how
    many the platform holds a call for (a lookup should have settled those)."""
    store = client.store
    before = sum(1 for i in ids if (r := store.get(i, history=False)) and r.state == "unknown")
    deadline = time.monotonic() + 60
    while store.redis.zcard(f"{store.ns}:reconcile") and time.monotonic() < deadline:
        time.sleep(0.5)
    records = [store.get(i) for i in ids]
    unknown = [r for r in records if r and r.state == "unknown"]
    with_call = [r for r in unknown if per_request.get(r.request_id)]
    by_lookup = sum(1 for r in records if r and "settled by lookup" in [h.event for h in r.history])
    print(
        f"reconciliation: unknown before {before}, settled by lookup {by_lookup}, unknown left "
        f"{len(unknown)} ({len(with_call)} of them with a call at the platform, "
        f"{len(unknown) - len(with_call)} without)"
    )
    return not with_call


if __name__ == "__main__":
    sys.exit(main())
