"""The producer's one-round-trip enqueue writes the message that Celery itself would write.

When the broker is the status store's Redis, one Lua script records the request and pushes
its task message (tasks/publish.py builds it). This pins that message, and its task-sent
event, against what the installed Celery and kombu publish for the same `send_task`: if an
upgrade within the versions pyproject.toml allows changes the format, this fails (`make
test-compat` runs it against each Celery/kombu line the dependencies allow). That real
workers consume such messages, and Flower sees them sent, is shown end to end elsewhere
(every test that enqueues on the Redis broker; test_flower.py).
"""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

import pytest
import redis

from followup.tasks.producer import FollowUpClient
from followup.tasks.publish import publish
from followup.worker.store import REGISTER_CHUNK
from tests.conftest import unique

pytestmark = pytest.mark.integration


def _normalised(raw: str | bytes, request_id: str) -> dict[str, Any]:
    """A kombu envelope with its body decoded, its request id and random tag replaced."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    envelope = json.loads(text.replace(request_id, "<id>"))
    envelope["body"] = json.loads(
        base64.b64decode(envelope["body"]).decode().replace(request_id, "<id>")
    )
    envelope["properties"].pop("delivery_tag")
    return dict(envelope)


def test_the_inline_message_and_its_event_are_what_celery_publishes(
    client: FollowUpClient, redis_url: str, private_queue: str
) -> None:
    assert client.inline is not None, "the session's broker is the store's Redis"
    r = redis.Redis.from_url(redis_url)
    events: list[bytes] = []
    subscribed = threading.Event()
    pubsub = r.pubsub()
    pubsub.subscribe(client.inline.event_channel)

    def listen() -> None:
        for _ in range(40):  # bounded: the two events, or give up after ~20 s
            message = pubsub.get_message(timeout=0.5)
            if message and message["type"] == "subscribe":
                subscribed.set()
            elif message and message["type"] == "message":
                events.append(message["data"])
                if len(events) == 2:
                    return

    listener = threading.Thread(target=listen)
    listener.start()
    assert subscribed.wait(10)
    fields = {"contact_id": unique(), "user_id": "u-1", "phone_number": "+61298765432"}
    try:
        ours = client.enqueue(queue=private_queue, **fields)
        request = _normalised(r.lindex(private_queue, 0) or b"", ours)["body"][1]["request"]
        celerys = unique("celery")
        publish(client.app, celerys, request, private_queue)
        listener.join(25)
        published = r.lrange(private_queue, 0, -1)  # LPUSH: newest first
    finally:
        pubsub.close()
        r.delete(private_queue)

    assert len(published) == 2 and len(events) == 2
    assert _normalised(published[1], ours) == _normalised(published[0], celerys)
    ours_event, celerys_event = (
        _normalised(raw, rid) for raw, rid in zip(events, (ours, celerys), strict=True)
    )
    for event in (ours_event, celerys_event):
        assert event["body"].pop("clock") > 0
        assert event["body"].pop("timestamp") > 0
    assert ours_event == celerys_event


def test_a_batch_over_several_script_runs_keeps_its_order_and_queues_each_new_request_once(
    client: FollowUpClient, redis_url: str, private_queue: str
) -> None:
    n = REGISTER_CHUNK * 2 + 50
    key = unique("key")
    batch = [
        {
            "contact_id": f"c-{i}",
            "user_id": "u-1",
            "phone_number": "+61298765432",
            "idempotency_key": f"{key}-{i}",
        }
        for i in range(n)
    ]
    ids = client.enqueue_many([*batch, batch[0]], queue=private_queue)  # the first, again
    r = redis.Redis.from_url(redis_url)
    try:
        messages = r.lrange(private_queue, 0, -1)
    finally:
        r.delete(private_queue)

    assert len(set(ids)) == n and ids[-1] == ids[0]  # the same request: its first id
    queued = [json.loads(m)["headers"]["id"] for m in reversed(messages)]  # LPUSH: newest first
    assert queued == ids[:n]  # one message per new request, in the batch's order
    for i in (0, REGISTER_CHUNK, n - 1):
        record = client.status(ids[i])
        assert record is not None and record.state == "queued"
        assert (record.contact_id, record.idempotency_key) == (f"c-{i}", f"{key}-{i}")
