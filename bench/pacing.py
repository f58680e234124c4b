"""The rate the fleet achieves against its limit, with 1, 2 and 4 worker processes.

Each run: N requests (one agent each) queued before the workers start, FOLLOWUP_RATE_LIMIT_PER_S
= LIMIT; the simulator enforces the same limit itself (a 429 past LIMIT x 10 requests in any
sliding 10-second window; Genesys counts per minute), so a 429 counts against us. The
achieved rate is (N - 1) / (last call - first call), from the simulator's own receive times.
Baseline in the same run: the limit itself.
Usage: python bench/pacing.py [N] [LIMIT]

Recovery (issue 21): python bench/pacing.py recovery [breaker|breaker40|aimd|agent ...]
- breaker B: a limit of 1/s, B requests waiting, the breaker opens after 3 answers of 500
  (the 11th to 13th calls, when the backlog holds its slots; cool-down 5 s): how long from
  the breaker opening to the next call (baseline: the cool-down plus one slot), and the
  rate after it against the limit.
- aimd: a limit of 2/s, 60 requests, the first six answered 429 without Retry-After: how
  long from the last 429 until calls go at 90 % of the limit again, and the whole run's rate
  against the limit (baseline: 60 calls at the limit, 30 s).
- agent: 15 requests for one agent, 3 s apart (FOLLOWUP_PER_USER_INTERVAL_S): the order
  they were dialled in, claims and spacing waits, and the rate against one call per 3 s.
"""

from __future__ import annotations

import os
import platform
import sys
import time
import uuid

from followup.cli.local_stack import Stack
from followup.tasks.producer import FollowUpClient

RECOVERY = len(sys.argv) > 1 and sys.argv[1] == "recovery"
N = int(sys.argv[1]) if len(sys.argv) > 1 and not RECOVERY else 200
LIMIT = float(sys.argv[2]) if len(sys.argv) > 2 and not RECOVERY else 20.0
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


BASE = {
    "FOLLOWUP_PER_USER_INTERVAL_S": "0",
    "FOLLOWUP_ENFORCE_CALLING_HOURS": "false",
    "FOLLOWUP_SWEEP_INTERVAL_S": "0.5",
    "FOLLOWUP_LOG_LEVEL": "WARNING",
    "FOLLOWUP_MAX_ATTEMPTS": "8",
    "FOLLOWUP_PER_NUMBER_MAX_CALLS": "0",  # every request dials the same number
}


def _scenario(
    redis_url: str,
    requests: list[dict[str, str]],
    faults: dict[str, object],
    deadline_s: float,
    **settings: str,
) -> tuple[list[dict[str, object]], list[list[str]], list[str]]:
    """Enqueue, start one worker, wait until all are placed: (the simulator's create-call
    requests, each request's history events, the request ids in enqueue order)."""
    run = f"rec-{uuid.uuid4().hex[:6]}"
    with Stack(run, redis_url, "--any-user", **{**BASE, **settings}) as stack:
        stack.sim.set_faults(**faults)
        client = FollowUpClient(stack.settings())
        ids = [client.enqueue(**request) for request in requests]
        stack.start_worker("0")
        started = time.monotonic()
        while time.monotonic() - started < deadline_s:
            if client.store.counts()["placed"] >= len(ids):
                break
            time.sleep(0.2)
        sent = stack.sim.requests()
        events = []
        for request_id in ids:
            record = client.store.get(request_id)
            events.append([h.event for h in record.history] if record else [])
        client.close()
    return sent, events, ids


def _claims(events: list[list[str]], event: str) -> str:
    """How many times `event` is in the histories (at least, where a history was capped)."""
    count = sum(e.count(event) for e in events)
    capped = any("entries left out" in e for e in events)
    return f"{'>= ' if capped else ''}{count}"


def breaker(redis_url: str, backlog: int) -> None:
    cooldown = 5.0
    requests = [
        {"contact_id": f"c-{i}", "user_id": f"u-{i}", "phone_number": "+61298765432"}
        for i in range(backlog)
    ]
    sent, events, _ = _scenario(
        redis_url,
        requests,
        {"script": ["ok"] * 10 + ["500"] * 3},  # after ten calls: a backlog holds slots
        3 * backlog + 120,
        FOLLOWUP_RATE_LIMIT_PER_S="1",
        FOLLOWUP_BREAKER_FAILURES="3",
        FOLLOWUP_BREAKER_COOLDOWN_S=str(cooldown),
    )
    failed = [r["at"] for r in sent if r["status"] == 500]
    opened = sorted(failed)[2] if len(failed) >= 3 else None
    ok = sorted(float(str(r["at"])) for r in sent if r["status"] == 201)
    after = [t for t in ok if opened is not None and t > float(str(opened))]
    recovery = after[0] - float(str(opened)) if after and opened is not None else float("nan")
    rate = (len(after) - 1) / (after[-1] - after[0]) if len(after) > 1 else 0.0
    print(
        f"breaker, {backlog} waiting, limit 1/s, cool-down {cooldown:g}s: first call "
        f"{recovery:.1f}s after it opened (baseline: cool-down + one slot = {cooldown + 1:g}s); "
        f"then {rate:.2f}/s = {rate:.0%} of the limit; {len(ok)}/{backlog} placed; "
        f"claims {_claims(events, 'claimed')}, breaker waits "
        f"{_claims(events, 'waiting for breaker')}"
    )


def aimd(redis_url: str) -> None:
    limit, count = 2.0, 60
    requests = [
        {"contact_id": f"c-{i}", "user_id": f"u-{i}", "phone_number": "+61298765432"}
        for i in range(count)
    ]
    sent, _, _ = _scenario(
        redis_url,
        requests,
        {"script": ["429"] * 6, "retry_after": ""},
        count * 3 + 120,
        FOLLOWUP_RATE_LIMIT_PER_S=str(limit),
    )
    throttled = sorted(float(str(r["at"])) for r in sent if r["status"] == 429)
    ok = sorted(float(str(r["at"])) for r in sent if r["status"] == 201)
    last_429 = throttled[-1] if throttled else (ok[0] if ok else 0.0)
    # Recovered: the first 5 s window after the last 429 holding 90 % of the limit's calls.
    recovered = next(
        (
            t - last_429
            for t in ok
            if t > last_429 and sum(1 for u in ok if t - 5 < u <= t) >= 0.9 * limit * 5
        ),
        float("nan"),
    )
    span = ok[-1] - ok[0] if len(ok) > 1 else float("nan")
    rate = (len(ok) - 1) / span if len(ok) > 1 else 0.0
    print(
        f"aimd, {count} calls at a limit of {limit:g}/s, six 429s without Retry-After: back to "
        f"90% of the limit {recovered:.1f}s after the last 429; the run {span:.1f}s = "
        f"{rate:.2f}/s = {rate / limit:.0%} of the limit (baseline: {(count - 1) / limit:.1f}s "
        f"at the limit); {len(ok)}/{count} placed, {len(throttled)} 429s"
    )


def agent(redis_url: str) -> None:
    count, spacing = 15, 3.0
    requests = [
        {"contact_id": f"c-{i}", "user_id": "u-one", "phone_number": "+61298765432"}
        for i in range(count)
    ]
    sent, events, ids = _scenario(
        redis_url,
        requests,
        {},
        count * spacing * 3 + 120,
        FOLLOWUP_RATE_LIMIT_PER_S="10",
        FOLLOWUP_PER_USER_INTERVAL_S=str(spacing),
    )
    calls = sorted((r for r in sent if r["status"] == 201), key=lambda r: float(str(r["at"])))
    order = [ids.index(str(r["correlation_id"])) for r in calls if r["correlation_id"] in ids]
    times = [float(str(r["at"])) for r in calls]
    span = times[-1] - times[0] if len(times) > 1 else float("nan")
    rate = (len(times) - 1) / span if len(times) > 1 else 0.0
    print(
        f"agent, {count} requests {spacing:g}s apart: dialled in the order "
        f"{', '.join(map(str, order))}; claims {_claims(events, 'claimed')}, spacing waits "
        f"{_claims(events, 'waiting for agent_spacing')}; {span:.1f}s = {rate:.3f}/s = "
        f"{rate * spacing:.0%} of one call per {spacing:g}s (baseline: {(count - 1) * spacing:g}s)"
    )


def recovery(redis_url: str, which: list[str]) -> int:
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, CPython "
        f"{platform.python_version()}; one worker process"
    )
    for name in which or ["breaker", "aimd", "agent"]:
        if name.startswith("breaker"):
            for backlog in [int(name[7:])] if name[7:] else [40, 90]:
                breaker(redis_url, backlog)
        elif name == "aimd":
            aimd(redis_url)
        elif name == "agent":
            agent(redis_url)
    return 0


def main() -> int:
    redis_url = os.environ.get("FOLLOWUP_REDIS_URL", "redis://localhost:6379/0")
    if RECOVERY:
        return recovery(redis_url, sys.argv[2:])
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
