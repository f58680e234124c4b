"""Speed, each figure beside its baseline measured in the same run (issue 16).

    .venv/bin/python bench/speed.py [FIGURE ...]

FIGURE: enqueue, dispatch, latency, memory, cpu (default: all, about three minutes).

- enqueue: `enqueue_follow_up` one by one, and `enqueue_many` of 2,000, against a bare
  `send_task` loop (a plain Celery app on the same Redis, no validation, no record).
- dispatch: calls/s at 100 ms API latency, one followup worker process with its defaults,
  against the naive worker (bench/naive_worker.py: httpx.post in a task, prefork, Celery's
  default of a process per core); they drain backlogs of 1,000 and 300.
- latency: enqueue to the API request arriving at the simulator, 60 requests 50 ms apart,
  one idle worker (warmed by one request).
- memory, cpu (one run): the worker's RSS after 1,000 and after 20,000 calls (0 ms
  latency); its rate over calls 1,000 to 4,000, one worker process with its defaults,
  against 3,000 direct httpx POSTs from 8 threads (no broker, no store).

A row counts only if every request was placed (or, for the naive worker, called) exactly
once. FOLLOWUP_REDIS_URL (default redis://localhost:6379/0; a private one if none answers).
Loopback only; every wait is bounded.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from celery import Celery
from direct import direct_posts

from followup.cli.local_stack import (
    BIN,
    PrivateRedis,
    Stack,
    Worker,
    delete_keys,
    die_with_parent,
    redis_answers,
    wait_until,
)
from followup.config.settings import load_settings
from followup.tasks.producer import FollowUpClient

HERE = Path(__file__).resolve().parent
RUN = f"speed-{uuid.uuid4().hex[:6]}"
# Direct POSTs at their fastest here: more threads on one httpx client only contend for its
# pool (32 threads measured 30-60 % slower), which would flatter the ratio.
DIRECT_THREADS = 8
ROWS: list[str] = []


def row(figure: str, ours: str, baseline: str, ratio: float, target: str, count: str) -> None:
    ROWS.append(f"| {figure} | {ours} | {baseline} | {ratio:.2f}x | {target} | {count} |")
    print(f"{figure}: followup {ours}; baseline {baseline}; {ratio:.2f}x ({target}); {count}")


def requests(n: int, tag: str, users: int = 1) -> list[dict[str, object]]:
    return [
        {
            "contact_id": f"c-{i}",
            "user_id": f"u-{i % users}",
            "phone_number": "+61298765432",
            "idempotency_key": f"{RUN}-{tag}-{i}",
        }
        for i in range(n)
    ]


def enqueue(url: str) -> None:
    n = 2000
    env = {**os.environ, "FOLLOWUP_REDIS_URL": url, "FOLLOWUP_BROKER_URL": url}
    client = FollowUpClient(
        load_settings(env | {"FOLLOWUP_NAMESPACE": RUN, "FOLLOWUP_QUEUE": f"{RUN}-enq"})
    )
    bare = Celery("bare", broker=url, set_as_current=False)
    try:
        client.enqueue(**requests(1, "warm")[0])
        bare.send_task("followup.place_call", kwargs={"request": {}}, queue=f"{RUN}-bare")

        def timed(work: Callable[[], object]) -> float:
            start = time.perf_counter()
            work()
            return (time.perf_counter() - start) / n

        batch = requests(n, "bare")
        base = timed(
            lambda: [
                bare.send_task("followup.place_call", kwargs={"request": r}, queue=f"{RUN}-bare")
                for r in batch
            ]
        )
        one = timed(lambda: [client.enqueue(**r) for r in requests(n, "one")])
        many_ids = []
        many = timed(lambda: many_ids.extend(client.enqueue_many(requests(n, "many"))))
        queued = client.store.counts()["queued"]
        count = f"{queued} recorded (2 x {n} + 1)"
        row(
            "`enqueue_follow_up`, one by one",
            f"{one * 1000:.3f} ms",
            f"{base * 1000:.3f} ms (bare `send_task` loop)",
            base / one,
            ">= 1.0x",
            count,
        )
        row(
            f"`enqueue_many`, {n:,} requests",
            f"{many * 1000:.3f} ms",
            f"{base * 1000:.3f} ms (bare `send_task` loop)",
            base / many,
            ">= 10x",
            f"{len(set(many_ids))} ids",
        )
    finally:
        client.close()
        bare.close()


def drain(stack: Stack, name: str, n: int, **env: str) -> tuple[float, Worker]:
    """Enqueue n (in the run's namespace `name`), start one worker, time until all placed."""
    env = {"FOLLOWUP_NAMESPACE": f"{RUN}-{name}", "FOLLOWUP_QUEUE": f"{RUN}-{name}", **env}
    client = FollowUpClient(stack.settings(**env))
    ids = client.enqueue_many(requests(n, name, users=50))
    worker = stack.start_worker(name, **env)
    started = time.monotonic()
    wait_until(lambda: client.store.counts()["placed"] >= n, 300, f"{n} placed", 0.1)
    seconds = time.monotonic() - started
    records = [client.store.get(i, history=False) for i in ids]
    placed = sum(1 for r in records if r and r.state == "placed")
    assert placed == n, f"{placed} of {n} placed"
    client.close()
    return seconds, worker


def calls_by_id(stack: Stack) -> Counter[str]:
    return Counter(c["correlation_id"] for c in stack.sim.calls())


def dispatch(stack: Stack) -> None:
    n, n_naive = 1000, 300  # the naive worker takes ~25 s for its 300
    stack.sim.reset()
    stack.sim.set_faults(call_latency_s=0.1)
    seconds, worker = drain(stack, "dispatch", n)
    worker.stop()
    ours = n / seconds
    calls = calls_by_id(stack)
    assert len(calls) == n and max(calls.values()) == 1
    n = n_naive

    stack.sim.reset()
    stack.sim.set_faults(call_latency_s=0.1)
    queue = f"{RUN}-naive"
    naive = Celery("naive", broker=stack.redis_url, set_as_current=False)
    for i in range(n):
        naive.send_task(
            "naive.place_call",
            kwargs={"contact_id": f"c-{i}", "user_id": "u-1", "phone_number": "+61298765432"},
            queue=queue,
        )
    naive.close()
    log = stack.log_dir / "naive.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(BIN / "celery"), "-A", "naive_worker", "worker", "-l", "INFO", "-Q", queue],
            cwd=HERE,
            env={
                **os.environ,
                "NAIVE_BROKER_URL": stack.redis_url,
                "NAIVE_API_BASE_URL": stack.sim.url,
                "NAIVE_QUEUE": queue,
            },
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        try:
            wait_until(lambda: " ready." in log.read_text(), 60, "the naive worker", 0.1)
            started = time.monotonic()
            wait_until(lambda: len(stack.sim.calls()) >= n, 300, f"{n} naive calls", 0.2)
            naive_rate = n / (time.monotonic() - started)
        finally:
            proc.terminate()
            proc.wait(30)
    stack.sim.set_faults()
    row(
        "dispatch at 100 ms API latency, one worker process, its defaults",
        f"{ours:.0f} calls/s",
        f"{naive_rate:.0f} calls/s (naive task, prefork, {os.cpu_count()} processes)",
        ours / naive_rate,
        ">= 10x the naive",
        f"{len(calls)} placed, each called once; naive: {len(stack.sim.calls())} calls",
    )


def latency(stack: Stack) -> None:
    stack.sim.reset()
    env = {"FOLLOWUP_NAMESPACE": f"{RUN}-lat", "FOLLOWUP_QUEUE": f"{RUN}-lat"}
    client = FollowUpClient(stack.settings(**env))
    stack.start_worker("latency", **env)
    warm = client.enqueue(**requests(1, "lat-warm")[0])
    wait_until(lambda: (r := client.store.get(warm)) and r.state == "placed", 30, "warm-up", 0.05)
    sent: dict[str, float] = {}
    for r in requests(60, "lat", users=60):
        at = time.time()
        sent[client.enqueue(**r)] = at
        time.sleep(0.05)
    wait_until(lambda: client.store.counts()["placed"] >= 61, 60, "60 placed", 0.1)
    arrived = {q["correlation_id"]: q["at"] for q in stack.sim.requests()}
    waits = sorted((arrived[i] - at) * 1000 for i, at in sent.items())
    p99 = waits[min(len(waits) - 1, int(0.99 * len(waits)))]
    row(
        "enqueue -> API request, light load (60 requests, 50 ms apart)",
        f"p50 {statistics.median(waits):.1f} ms, p99 {p99:.1f} ms",
        "-",
        0.0,
        "p99 <= 20 ms",
        f"{len(waits)} placed",
    )
    client.close()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def memory_and_cpu(stack: Stack) -> None:
    """One worker drains 20,000 calls at 0 ms latency: its RSS after 1,000 and after all of
    them; its rate over calls 1,000 to 4,000 (warm, CPU-bound) against direct POSTs."""
    n, early, timed = 20_000, 1_000, 3_000
    threads = DIRECT_THREADS
    stack.sim.reset()
    direct = timed / direct_posts(stack.sim.url, timed, threads)
    stack.sim.reset()
    env = {"FOLLOWUP_NAMESPACE": f"{RUN}-mem", "FOLLOWUP_QUEUE": f"{RUN}-mem"}
    client = FollowUpClient(stack.settings(**env))
    for start in range(0, n, 2000):
        client.enqueue_many(requests(n, "mem", users=50)[start : start + 2000])
    worker = stack.start_worker("memory", **env)
    counts = client.store.counts
    wait_until(lambda: counts()["placed"] >= early, 120, f"{early} placed", 0.02)
    after_early, started = rss_mib(worker.proc.pid), time.monotonic()
    wait_until(lambda: counts()["placed"] >= early + timed, 120, "timed calls", 0.02)
    ours = timed / (time.monotonic() - started)
    wait_until(lambda: counts()["placed"] >= n, 600, f"{n} placed", 0.2)
    after_all = rss_mib(worker.proc.pid)
    worker.stop()
    calls = calls_by_id(stack)
    placed = f"{counts()['placed']} placed, {len(calls)} called, at most {max(calls.values())}x"
    assert counts()["placed"] == len(calls) == n and max(calls.values()) == 1, placed
    stack.sim.reset()
    row(
        f"worker memory over {n:,} calls",
        f"{after_early:.0f} -> {after_all:.0f} MiB ({after_all / after_early - 1:+.1%})",
        f"RSS after {early:,} calls",
        after_all / after_early,
        "stays within 10 %",
        placed,
    )
    row(
        "CPU per call at 0 ms latency, one process",
        f"{ours:.0f} calls/s",
        f"{direct:.0f}/s (direct httpx POSTs, {threads} threads)",
        ours / direct,
        ">= 0.5x direct",
        f"calls {early:,} to {early + timed:,} of the {n:,} above",
    )
    client.close()


def main() -> int:
    figures = sys.argv[1:] or ["enqueue", "dispatch", "latency", "memory", "cpu"]
    url = os.environ.get("FOLLOWUP_REDIS_URL", "redis://localhost:6379/0")
    private = None if redis_answers(url) else PrivateRedis()
    url = private.url if private else url
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, CPython "
        f"{platform.python_version()}; Redis at {url}"
    )
    unpaced = {  # capacity, not policy: no rate limit, no spacing, no calling hours
        "FOLLOWUP_RATE_LIMIT_PER_S": "10000",
        "FOLLOWUP_PER_USER_INTERVAL_S": "0",
        "FOLLOWUP_PER_NUMBER_MAX_CALLS": "0",
        "FOLLOWUP_ENFORCE_CALLING_HOURS": "false",
    }
    try:
        if "enqueue" in figures:
            enqueue(url)
        with Stack(RUN, url, "--any-user", **unpaced) as stack:
            if "dispatch" in figures:
                dispatch(stack)
            if "latency" in figures:
                latency(stack)
            if "memory" in figures or "cpu" in figures:
                memory_and_cpu(stack)
    finally:
        delete_keys(url, f"*{RUN}*")
        if private:
            private.stop()
    print("\n| figure | followup | baseline in the same run | ratio | target | placed |")
    print("|---|---|---|---|---|---|")
    print("\n".join(ROWS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
