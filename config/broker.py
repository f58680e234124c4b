"""The Redis broker transport followup's Celery app uses: kombu's own, with one fix, one
saving and one guard.

With kombu and Celery 5.7, a worker whose Redis broker goes away while it holds an unacked
message (always, with acks_late and a call in flight) dies, twice over:
- the consumer collects the broken connection, then closes it, and closing the channel
  tries to restore the unacked messages through a transport that has lost its connection;
- once reconnected, the task's ack goes to the message's old channel, which is closed.
Each raises AttributeError, which Celery treats as unrecoverable: the worker shuts down
instead of reconnecting. This channel skips both when its connection is gone. Nothing is
lost by that: such messages stay in Redis' unacked set and come back after the visibility
timeout, where the status store's claim makes a second delivery a no-op.

The saving: kombu builds a new redis.Redis client (and its table of response callbacks) for
every publish, ack and event (about 5 % of a worker's CPU per call, measured with
bench/speed.py cpu). This channel builds one per connection pool and reuses it (redis-py
clients are thread-safe).

The guard: kombu decodes a Redis message's envelope with its own JSON decoder, which turns
{"__type__": ..., "__value__": ...} objects into Python values; a sender who puts one where a
task id goes (`{"__type__": "uuid", "__value__": "x"}`) makes it raise inside the transport,
after the message left its list: the worker dies and the message is lost. This channel reads
envelopes as plain JSON, and one it cannot read (not JSON, not kombu's shape, a body that is
not base64) is handed on as an `UNREADABLE` message, which the worker's intake
(`followup.worker.intake`) counts as a dead letter and acknowledges.
"""

from __future__ import annotations

import base64
import binascii
import json
import types
import uuid
from typing import Any

from kombu.transport import redis as kombu_redis

TRANSPORT = "followup.config.broker:Transport"
UNREADABLE = "application/x-followup-unreadable"  # the content type of such a message
EXCERPT_CHARS = 200


def read_envelope(text: str) -> dict[str, Any]:
    """A Redis message's envelope as plain JSON (no kombu type markers), checked for the shape
    kombu's virtual transport relies on; otherwise an UNREADABLE message that says why, with
    the first EXCERPT_CHARS of it (masked by whoever keeps it)."""
    try:
        envelope = json.loads(text)
    except (ValueError, RecursionError):
        return _unreadable("not JSON", text)
    problem = _envelope_problem(envelope)
    return _unreadable(problem, text) if problem else envelope


def _envelope_problem(envelope: Any) -> str | None:
    if not isinstance(envelope, dict):
        return "not a JSON object"
    properties = envelope.get("properties")
    if not isinstance(properties, dict) or not isinstance(properties.get("delivery_tag"), str):
        return "no properties with a delivery tag"
    if not isinstance(properties.get("delivery_info", {}), dict):
        return "delivery_info is not an object"
    if not isinstance(envelope.get("headers") or {}, dict):
        return "headers is not an object"
    body, encoding = envelope.get("body"), properties.get("body_encoding")
    if not isinstance(body, str | None) or encoding not in (None, "base64"):
        return "a body kombu cannot read"
    if encoding == "base64" and body:
        try:
            base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            return "a body that is not base64"
    return None


def _unreadable(reason: str, text: str) -> dict[str, Any]:
    return {
        "body": "",
        "content-type": UNREADABLE,
        "content-encoding": "binary",
        "headers": {"followup_unreadable": reason, "followup_excerpt": text[:EXCERPT_CHARS]},
        "properties": {
            "delivery_tag": uuid.uuid4().hex,
            "delivery_info": {"exchange": "", "routing_key": ""},
            "priority": 0,
        },
    }


def _reading_plain_json(method: Any) -> Any:
    """kombu's own method, with `read_envelope` where it calls kombu's JSON `loads` (the
    same code on every kombu version, nothing copied)."""
    scope = {**method.__globals__, "loads": read_envelope}
    return types.FunctionType(method.__code__, scope, method.__name__, method.__defaults__)


class Channel(kombu_redis.Channel):
    _shared_client: Any = None

    # Where kombu pops a message from a queue's list and decodes it.
    _brpop_read = _reading_plain_json(kombu_redis.Channel._brpop_read)
    _get = _reading_plain_json(kombu_redis.Channel._get)

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)  # type: ignore[no-untyped-call]
        client = self._shared_client
        if client is None or client.connection_pool is not self.pool:
            client = self._shared_client = super()._create_client()  # type: ignore[no-untyped-call]
        return client

    def _connection_lost(self) -> bool:
        return self.connection is None or getattr(self.connection, "client", None) is None

    def close(self) -> None:
        if self._connection_lost():
            self.do_restore = False
        super().close()  # type: ignore[no-untyped-call]

    def basic_ack(self, delivery_tag: Any, multiple: bool = False) -> None:
        if not self._connection_lost():
            super().basic_ack(delivery_tag, multiple=multiple)  # type: ignore[no-untyped-call]

    def basic_reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        if not self._connection_lost():
            super().basic_reject(delivery_tag, requeue=requeue)  # type: ignore[no-untyped-call]


class Transport(kombu_redis.Transport):
    Channel = Channel
