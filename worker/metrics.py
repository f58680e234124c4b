"""Prometheus metrics of one worker process, served on FOLLOWUP_METRICS_PORT (off: no-op)
at FOLLOWUP_METRICS_ADDRESS (loopback unless told otherwise).

Two kinds (docs/operations.md, "What the numbers mean"):
- what this process did: create-call requests sent, waits imposed, token fetches, the
  platform's latency. Per process, from its start; Prometheus sums them over processes.
- `followup_fleet_*`: the fleet's figures, read from the status store at each scrape, so
  every process reports the same (take max() in a dashboard). Outcomes are only these: the
  store counts them in the same Lua script as each transition, whoever makes it (a worker's
  pipeline, its sweeper, its reconciler, a person), so they agree with the records after a
  crash, which a process's own counter would not.
No label is a phone number, a request id or a user id: privacy, and bounded cardinality.

One process a port. A process that finds its port taken (another worker on the same host)
serves on the next free one of the following PORT_OFFSETS - 1 and says so in one error
line; with none free, it serves none. Either way the worker goes on: its metrics are never
a reason to stop consuming, sweeping or reconciling.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from typing import Any

import redis
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from followup.worker import stats
from followup.worker.store import StatusStore

log = structlog.get_logger(__name__)

PORT_OFFSETS = 10
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10)


class Metrics:
    def __init__(self, store: StatusStore | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.refused = Counter(
            "followup_messages_refused",
            "Messages this process refused with no usable request id: a dead letter, no record.",
            registry=r,
        )
        self.attempts = Counter(
            "followup_attempts",
            "Create-call POSTs this process sent, every one (the API's load): those the record "
            "refunds (a 429, a 401 sent again with a fresh token) count here, not in attempts.",
            registry=r,
        )
        self.waits = Counter(
            "followup_waits",
            "Times a request was made to wait (no attempt spent), by what for.",
            ["reason"],
            registry=r,
        )
        self.tokens = Counter(
            "followup_token_fetches", "Token fetches, by result.", ["result"], registry=r
        )
        self.credentials_refused = Gauge(
            "followup_credentials_refused",
            "1 while the platform refuses this process's OAuth client credentials (it dials "
            "nothing; workers whose credentials work go on), else 0.",
            registry=r,
        )
        self.latency = Histogram(
            "followup_api_request_duration_seconds",
            "Requests to the platform, by endpoint and status class (2xx, 4xx, 5xx, none).",
            ["endpoint", "status_class"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        if store is not None:
            r.register(_FleetCollector(store))

    def serve(self, address: str, port: int) -> int | None:
        """Serve /metrics on `port`, else on the next free one (PORT_OFFSETS in all); returns
        the port served, or None (said in one error line) if every one was taken."""
        for offset in range(PORT_OFFSETS):
            try:
                start_http_server(port + offset, addr=address, registry=self.registry)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or port + offset >= 65535:
                    log.error(
                        "metrics not served: cannot listen there; check "
                        "FOLLOWUP_METRICS_ADDRESS and FOLLOWUP_METRICS_PORT",
                        address=address,
                        port=port + offset,
                        error=str(exc),
                    )
                    return None
                continue
            if offset:
                log.error(
                    f"FOLLOWUP_METRICS_PORT {port} is in use (another worker process on this "
                    f"host?): metrics served on port {port + offset} instead; give each "
                    "process its own port",
                    address=address,
                    port=port + offset,
                )
            else:
                log.info("metrics served", address=address, port=port, path="/metrics")
            return port + offset
        log.error(
            f"FOLLOWUP_METRICS_PORT {port} and the {PORT_OFFSETS - 1} ports after it are in "
            "use: this process serves no metrics; give each process its own port",
            address=address,
        )
        return None

    def api_request(self, endpoint: str, status: int | None, seconds: float) -> None:
        status_class = f"{status // 100}xx" if status else "none"
        self.latency.labels(endpoint, status_class).observe(seconds)

    def waited(self, reason: str) -> None:
        self.waits.labels(reason).inc()


class _FleetCollector(Collector):
    """Fleet-wide gauges, read from the status store at scrape time."""

    def __init__(self, store: StatusStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Any]:
        try:
            figures = stats.read(self.store, stats.now(self.store))
        except redis.RedisError:
            return
        states = GaugeMetricFamily(
            "followup_fleet_requests", "Requests in each state now, fleet-wide.", labels=["state"]
        )
        for state, count in figures.requests_now.items():
            states.add_metric([state], count)
        last_hour = GaugeMetricFamily(
            "followup_fleet_outcomes_last_hour",
            "Requests that reached their outcome in the last hour, each once, under the "
            "outcome it has now.",
            labels=["outcome"],
        )
        reached = CounterMetricFamily(
            "followup_fleet_outcomes",
            "Outcomes reached, fleet-wide: each time a request became placed, failed, unknown, "
            "cancelled or rejected (an unknown later placed counts under both).",
            labels=["outcome"],
        )
        for outcome in stats.OUTCOMES:
            last_hour.add_metric([outcome], figures.outcomes_last_hour[outcome])
            reached.add_metric([outcome], figures.outcomes_total[outcome])
        yield states
        yield last_hour
        yield reached
        yield GaugeMetricFamily(
            "followup_fleet_settled_by_lookup_last_hour",
            "Unknown requests placed by a lookup at the platform in the last hour.",
            value=figures.settled_by_lookup_last_hour,
        )
        yield CounterMetricFamily(
            "followup_fleet_settled_by_lookup",
            "Unknown requests placed by a lookup at the platform, fleet-wide.",
            value=figures.settled_by_lookup_total,
        )
        waiting = GaugeMetricFamily(
            "followup_fleet_waiting", "Requests waiting, by what for.", labels=["reason"]
        )
        for reason in stats.WAIT_REASONS:
            waiting.add_metric([reason], figures.waiting_by_reason.get(reason, 0))
        yield waiting
        lost = CounterMetricFamily(
            "followup_fleet_outcomes_lost",
            "Outcome-stream entries trimmed before a consumer group handled them, by group.",
            labels=["group"],
        )
        for group, count in figures.outcomes_lost.items():
            lost.add_metric([group], count)
        yield lost
        yield GaugeMetricFamily(
            "followup_fleet_rate_in_force_per_second",
            "The global rate limit in force (lowered after a 429).",
            value=figures.rate_in_force_per_s,
        )
        yield GaugeMetricFamily(
            "followup_fleet_breaker_open",
            "1 while the breaker holds dialling, else 0.",
            value=0 if figures.breaker["state"] == "closed" else 1,
        )
