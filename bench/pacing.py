"""The rate the fleet achieves against its limit, with 1, 2 and 4 worker processes.

Each run: N requests (one agent each) queued before the workers start, FOLLOWUP_RATE_LIMIT_PER_S
= LIMIT; the simulator enforces the same limit itself (a 429 past LIMIT x 10 requests in any
sliding 10-second window; Genesys counts per minute), so a 429 counts against us. The
achieved rate is (N - 1) / (last call - first call), from the simulator's own receive times.
Baseline in the same run: the limit itself.
Usage: python bench/pacing.py [N] [LIMIT]
"""

from __future__ import annotations

import os
import platform
import sys
import time
import uuid

from followup.cli.local_stack import Stack
from followup.tasks.producer import FollowUpClient

N = int(sys.argv[1]) if len(sys.argv) > 1 else 200
LIMIT = float(sys.argv[2]) if len(sys.argv) > 2 else 20.0
DEADLINE_S = 3 * N / LIMIT + 60


def run(workers: int, redis_url: str) -> tuple[float, int, int]:
    settings = {
        "FOLLOWUP_RATE_LIMIT_PER_S": str(LIMIT),
        "FOLLOWUP_PER_USER_INTERVAL_S": "0",
        "FOLLOWUP_PER_NUMBER_MAX_CALLS": "0",
        # The run dials Sydney numbers at any hour: calling hours are not what it measures.
        "FOLLOWUP_ENFORCE_CALLING_HOURS": "false",
        "FOLLOWUP_SWEEP_INTERVAL_S": "0.5",
        "FOLLOWUP_LOG_LEVEL": "WARNING",
    }
    with Stack(f"pace-{uuid.uuid4().hex[:6]}", redis_url, "--any-user", **settings) as stack:
        stack.sim.set_faults(rate_limit=LIMIT, rate_window_s=10)
        client = FollowUpClient(stack.settings())
        client.enqueue_many(
            [
                {"contact_id": f"c-{i}", "user_id": f"u-{i}", "phone_number": "+61298765432"}
                for i in range(N)
            ]
        )
        for n in range(workers):
            stack.start_worker(str(n))
        started = time.monotonic()
        while time.monotonic() - started < DEADLINE_S:
            if client.store.counts()["placed"] >= N:
                break
            time.sleep(0.2)
        times = sorted(c["received_at"] for c in stack.sim.calls())
        throttled = sum(1 for r in stack.sim.requests() if r["status"] == 429)
        client.close()
    rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
    return rate, len(times), throttled


def main() -> int:
    redis_url = os.environ.get("FOLLOWUP_REDIS_URL", "redis://localhost:6379/0")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, CPython "
        f"{platform.python_version()}; {N} requests at a limit of {LIMIT:g}/s (baseline: the "
        "limit itself)"
    )
    ok = True
    for workers in (1, 2, 4):
        rate, placed, throttled = run(workers, redis_url)
        print(
            f"{workers} worker process(es) x 8 threads: {rate:6.2f}/s = {rate / LIMIT:6.1%} of "
            f"the limit; {placed}/{N} placed; 429s: {throttled}"
        )
        ok = ok and placed == N and throttled == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
