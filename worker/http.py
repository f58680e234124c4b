"""The HTTP client for every request to the platform: a total deadline per request, bodies
read up to a bound, no retries by the library, connections not kept long enough to go stale.

- **Deadline.** httpx's timeouts apply to each read, so a server that drips its headers a
  byte at a time holds a request far past them. Here every connect, read and write of a
  request gets at most what is left of its deadline (a network backend that httpcore asks
  for each socket operation), so no attempt can outlive the claim it runs under.
- **Bounded bodies.** At most MAX_BODY_BYTES of an answer are read (a question's answer, such
  as an analytics page, may be given a larger bound); the rest is dropped with the
  connection. The body is asked for uncompressed.
- **Keep-alive.** A platform's load balancer closes idle connections (after 5 s at the
  least, commonly); a POST written into a connection it is closing is lost in a way that
  looks like a call that may have been placed. Connections idle longer than
  FOLLOWUP_HTTP_KEEPALIVE_S (default 4) are not reused; 0 opens one for every request.

Warning:
    The deadline backend is installed on httpx's transport through its private `_pool`;
    tests/test_platform_misbehaving.py fails if an httpx upgrade moves it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpcore
import httpx

MAX_BODY_BYTES = 64 * 1024
MAX_JSON_DEPTH = 32  # no platform answer nests deeper; a deeper one is not the contract's

_deadline: ContextVar[float | None] = ContextVar("followup_http_deadline", default=None)


def _left(timeout: float | None, error: type[Exception]) -> float | None:
    """The time a socket operation may take: its own timeout, or less if the request's
    deadline is nearer; the error if the deadline has passed."""
    deadline = _deadline.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise error("the request's deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        return _DeadlineStream(
            self._inner.start_tls(
                ssl_context, server_hostname, _left(timeout, httpcore.ConnectTimeout)
            )
        )

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(
            host, port, _left(timeout, httpcore.ConnectTimeout), local_address, socket_options
        )
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_unix_socket(
            path, _left(timeout, httpcore.ConnectTimeout), socket_options
        )
        return _DeadlineStream(stream)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


@dataclass(frozen=True)
class Answer:
    """What the platform answered, read up to MAX_BODY_BYTES."""

    status: int
    headers: httpx.Headers
    body: bytes
    truncated: bool = False
    seconds: float = 0.0  # how long it took, all told


def answer_json(answer: Answer) -> Any:
    """The answer's body as JSON, or None if it is no usable answer: cut off at its bound,
    not JSON (or not UTF-8), or nested deeper than MAX_JSON_DEPTH (which would otherwise
    raise RecursionError here or in whatever walks it). Every reader of a platform's answer
    goes through this, and checks the types of what it takes (`dig`)."""
    return None if answer.truncated else read_json(answer.body)


def read_json(data: bytes | str) -> Any:
    """data as JSON, or None if it is not JSON or nests deeper than MAX_JSON_DEPTH."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return value if _depth_within(value, MAX_JSON_DEPTH) else None


def dig(value: Any, *path: str) -> Any:
    """value[path[0]][path[1]]... through objects only; None where a step is missing or
    not an object."""
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def answer_moment(value: Any, *, naive_is_utc: bool) -> datetime | None:
    """An ISO 8601 time from a platform's answer (a trailing Z read as UTC); None if it is
    not one, or if it names no zone and naive_is_utc is False."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC) if naive_is_utc else None


def _depth_within(value: Any, limit: int) -> bool:
    """Whether value nests no deeper than limit, walked without recursion."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return False
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return True


Observer = Callable[[str, int | None, float], None]  # (endpoint, HTTP status, seconds)


class PlatformHttp:
    """One pooled client for all of a worker's threads. `observe` hears of every request:
    its endpoint ('token', 'call' ...), its status (None if no answer) and how long it took."""

    def __init__(
        self,
        *,
        timeout_s: float,
        keepalive_s: float,
        max_connections: int,
        observe: Observer = lambda *_: None,
    ) -> None:
        self.timeout_s = timeout_s
        self._observe = observe
        transport = httpx.HTTPTransport(
            retries=0,  # a create-call POST must never be sent twice by the library
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections if keepalive_s > 0 else 0,
                keepalive_expiry=keepalive_s,
            ),
        )
        transport._pool._network_backend = _DeadlineBackend()  # see the module's Warning
        self.client = httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,
            headers={"Accept-Encoding": "identity"},
        )

    def request(
        self,
        method: str,
        url: str,
        *,
        endpoint: str,
        max_body_bytes: int = MAX_BODY_BYTES,
        **kwargs: Any,
    ) -> Answer:
        """One request within FOLLOWUP_HTTP_TIMEOUT_S, all told, its answer read up to
        max_body_bytes (a lookup's may be larger than a call's); raises httpx.HTTPError."""
        started = time.monotonic()
        token = _deadline.set(started + self.timeout_s)
        status = None
        try:
            with self.client.stream(method, url, **kwargs) as response:
                status = response.status_code
                body = bytearray()
                truncated = False
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > max_body_bytes:
                        truncated = True
                        break
                return Answer(
                    status,
                    response.headers,
                    bytes(body[:max_body_bytes]),
                    truncated,
                    time.monotonic() - started,
                )
        finally:
            _deadline.reset(token)
            self._observe(endpoint, status, time.monotonic() - started)

    def close(self) -> None:
        self.client.close()
