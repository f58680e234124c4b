"""The Redis broker transport followup's Celery app uses: kombu's own, with one fix and one
saving.

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
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis

TRANSPORT = "followup.config.broker:Transport"


class Channel(kombu_redis.Channel):
    _shared_client: Any = None

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
