"""The fleet's figures, as the status store keeps them while requests move: read in one
round trip, whatever the number of records (no scan). Each name says what it counts
(docs/operations.md, "What the numbers mean"):

- requests_now: requests in each state now (the sizes of the state indices);
- outcomes_last_hour: requests that reached their outcome in the last hour, each counted
  once, under the outcome it has now (per-minute hashes the transitions keep: a request
  that leaves an outcome, unknown -> placed by a lookup or a person's retry, is taken out of
  it); settled_by_lookup_last_hour: those placed by a lookup after being unknown;
- outcomes_total, settled_by_lookup_total: the fleet's running totals of outcomes reached
  (an unknown later placed counts under both), as Prometheus counters want them;
- the enqueue-to-placed times of the last hour (buckets of x1.25);
- what waits, and for what: the due set and the per-reason wait indices;
- the limiter's rate in force, the breaker's state, the fleet-wide pauses;
- outcomes_lost: outcome-stream entries each consumer group lost to trimming.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, cast

from followup.worker.records import STATES
from followup.worker.store import StatusStore

WAIT_REASONS = (
    "rate_limit",
    "agent_spacing",
    "agent_busy",
    "number_cap",
    "availability",
    "calling_hours",
    "not_before",
    "api_pause",
    "breaker",
    "credentials",
    "retry_backoff",
    "status_store",
)
OUTCOMES = ("placed", "failed", "unknown", "cancelled", "rejected")
BUCKET = 1.25  # a placed request's time falls in [1.25^k, 1.25^(k+1)) milliseconds


@dataclass
class FleetStats:
    requests_now: dict[str, int]
    outcomes_last_hour: dict[str, int]
    settled_by_lookup_last_hour: int
    outcomes_total: dict[str, int]
    settled_by_lookup_total: int
    enqueue_to_placed_p50_s: float | None
    enqueue_to_placed_p95_s: float | None
    due_set: int
    waiting_by_reason: dict[str, int]
    rate_limit_per_s: float
    rate_in_force_per_s: float
    breaker: dict[str, Any]
    pauses_seconds_left: dict[str, float] = field(default_factory=dict)
    outcomes_lost: dict[str, int] = field(default_factory=dict)  # by consumer group

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def now(store: StatusStore) -> float:
    """The status store's clock, in seconds."""
    seconds, micros = cast(tuple[int, int], store.redis.time())
    return seconds + micros / 1e6


def read(store: StatusStore, now: float) -> FleetStats:
    """The figures at `now` (the store's clock, seconds)."""
    ns = store.ns
    minutes = [f"{ns}:stats:{m}" for m in range(int(now // 60) - 59, int(now // 60) + 1)]
    pipe = store.redis.pipeline(transaction=False)
    for state in STATES:
        pipe.zcard(f"{ns}:state:{state}")
    for key in minutes:
        pipe.hgetall(key)
    pipe.zcard(f"{ns}:due")
    for reason in WAIT_REASONS:
        pipe.zcard(f"{ns}:waiting:{reason}")
    pipe.hgetall(f"{ns}:limiter")
    pipe.hgetall(f"{ns}:breaker")
    pipe.hgetall(f"{ns}:counts")
    pipe.hgetall(f"{ns}:outcomes:lost")
    raw = pipe.execute()
    pauses = _pauses(store, now)

    states = {str(s): int(n) for s, n in zip(STATES, raw[: len(STATES)], strict=True)}
    hours = cast(list[dict[str, str]], raw[len(STATES) : len(STATES) + 60])
    rest = raw[len(STATES) + 60 :]
    due, waits = rest[0], rest[1 : 1 + len(WAIT_REASONS)]
    limiter, breaker, counts = rest[-4], rest[-3], cast(dict[str, str], rest[-2])
    lost = cast(dict[str, str], rest[-1])

    def last_hour(name: str) -> int:
        return sum(int(h.get(name, 0)) for h in hours)

    took: dict[int, int] = {}
    for h in hours:
        for name, count in h.items():
            if name.startswith("took:"):
                bucket = int(name[5:])
                took[bucket] = took.get(bucket, 0) + int(count)
    limit = store.pacing.limit
    return FleetStats(
        requests_now=states,
        outcomes_last_hour={o: last_hour(o) for o in OUTCOMES},
        settled_by_lookup_last_hour=last_hour("settled_by_lookup"),
        outcomes_total={o: int(counts.get(o, 0)) for o in OUTCOMES},
        settled_by_lookup_total=int(counts.get("settled_by_lookup", 0)),
        enqueue_to_placed_p50_s=_percentile(took, 0.50),
        enqueue_to_placed_p95_s=_percentile(took, 0.95),
        due_set=int(due),
        waiting_by_reason={r: int(n) for r, n in zip(WAIT_REASONS, waits, strict=True) if int(n)},
        rate_limit_per_s=limit,
        rate_in_force_per_s=_rate_in_force(limiter, limit, now),
        breaker=_breaker(breaker, now),
        pauses_seconds_left=pauses,
        outcomes_lost={group: int(n) for group, n in sorted(lost.items())},
    )


def _percentile(buckets: dict[int, int], q: float) -> float | None:
    """The bucket's upper bound (seconds) that holds the q-th of the counted times."""
    total = sum(buckets.values())
    if not total:
        return None
    seen = 0
    for bucket in sorted(buckets):
        seen += buckets[bucket]
        if seen >= q * total:
            return round(math.pow(BUCKET, bucket + 1) / 1000, 3)
    return None


def _rate_in_force(limiter: dict[str, str], limit: float, now: float) -> float:
    """As the Lua limiter computes it: halved by a 429, won back at 5 % of the limit a second."""
    rate, at = limiter.get("rate"), limiter.get("rate_at")
    if rate is None or at is None:
        return limit
    return round(min(limit, float(rate) + (now - float(at)) * limit * 0.05), 3)


def _breaker(breaker: dict[str, str], now: float) -> dict[str, Any]:
    if breaker.get("state") != "open":
        return {"state": "closed", "failures_in_a_row": int(breaker.get("failures", 0))}
    ends = float(breaker.get("ends", 0))
    return {
        "state": "open" if ends > now else "half-open (a probe may go)",
        "seconds_left": max(0.0, round(ends - now, 1)),
        "cooldown_s": float(breaker.get("cooldown", 0)),
    }


def _pauses(store: StatusStore, now: float) -> dict[str, float]:
    """Fleet-wide pauses in force (the API's Retry-After, refused credentials)."""
    names = sorted(cast(set[str], store.redis.smembers(f"{store.ns}:pauses")))
    if not names:
        return {}
    ends = cast(list[str | None], store.redis.mget([f"{store.ns}:pause:{n}" for n in names]))
    return {
        name: round(float(until) - now, 1)
        for name, until in zip(names, ends, strict=True)
        if until and float(until) > now
    }
