"""The fleet's figures, as the status store keeps them while requests move: read in one
round trip, whatever the number of records (no scan).

- counts by state: the sizes of the state indices;
- the last hour's outcomes and the enqueue-to-placed times: per-minute hashes that every
  terminal transition increments (`store_lua.record_outcome`; times in buckets of x1.25);
- what waits, and for what: the due set and the per-reason wait indices;
- the limiter's rate in force and the breaker's state.
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
BUCKET = 1.25  # a placed request's time falls in [1.25^k, 1.25^(k+1)) milliseconds


@dataclass
class FleetStats:
    states: dict[str, int]
    last_hour: dict[str, int]
    placed_p50_s: float | None
    placed_p95_s: float | None
    due: int
    waiting: dict[str, int]
    rate_limit_per_s: float
    rate_in_force_per_s: float
    breaker: dict[str, Any]
    paused: dict[str, float] = field(default_factory=dict)  # fleet-wide pauses: seconds left

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
    raw = pipe.execute()
    pauses = _pauses(store, now)

    states = {str(s): int(n) for s, n in zip(STATES, raw[: len(STATES)], strict=True)}
    hours = cast(list[dict[str, str]], raw[len(STATES) : len(STATES) + 60])
    rest = raw[len(STATES) + 60 :]
    due, waits, limiter, breaker = rest[0], rest[1 : 1 + len(WAIT_REASONS)], rest[-2], rest[-1]

    last_hour = {s: sum(int(h.get(s, 0)) for h in hours) for s in ("placed", "failed", "unknown")}
    took: dict[int, int] = {}
    for h in hours:
        for name, count in h.items():
            if name.startswith("took:"):
                bucket = int(name[5:])
                took[bucket] = took.get(bucket, 0) + int(count)
    limit = store.pacing.limit
    return FleetStats(
        states=states,
        last_hour=last_hour,
        placed_p50_s=_percentile(took, 0.50),
        placed_p95_s=_percentile(took, 0.95),
        due=int(due),
        waiting={r: int(n) for r, n in zip(WAIT_REASONS, waits, strict=True) if int(n)},
        rate_limit_per_s=limit,
        rate_in_force_per_s=_rate_in_force(limiter, limit, now),
        breaker=_breaker(breaker, now),
        paused=pauses,
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
