"""The one place a `followup.place_call` message is built and published.

Two ways, one message:
- `publish` goes through Celery (`send_task`): any broker, used by the sweeper, the CLI and
  whenever the broker is not the status store's own Redis;
- `RedisMessages` builds what kombu's Redis transport writes for that same `send_task` (the
  task message, and the task-sent event Flower shows), so that the producer can write the
  record and the message in one Lua script: one round trip, and never a record without its
  message. tests/test_inline_publish.py pins the format against the installed Celery and
  kombu.
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from typing import Any

from celery import Celery
from celery.utils.nodenames import anon_nodename
from celery.utils.time import utcoffset

from followup.config.celery import TASK_NAME
from followup.config.settings import queue_problem
from followup.tasks.request import request_id_problem
from followup.worker.store import InlineMessage

ARGSREPR = "()"


def kwargs_repr(request_id: str) -> str:
    """What Flower shows as the task's arguments: the request id, never the phone number."""
    return f"{{'request_id': '{request_id}'}}"


def publish(
    app: Celery, request_id: str, request: dict[str, Any], queue: str, producer: Any = None
) -> None:
    """Publish the request; the task id is the request id, so Flower and the store agree.

    argsrepr/kwargsrepr keep the phone number out of Flower's events. Raises ValueError for an
    id that is not a request id (Celery would mint a new one for an empty id, and a request
    republished under a new id is a second call) or a queue that is not a follow-up queue.
    """
    check_destination(request_id, queue)
    app.send_task(
        TASK_NAME,
        kwargs={"request": request},
        task_id=request_id,
        queue=queue,
        producer=producer,
        argsrepr=ARGSREPR,
        kwargsrepr=kwargs_repr(request_id),
        ignore_result=True,  # the status store is the record; and Celery's default varies
    )


def check_destination(request_id: str, queue: str) -> None:
    """ValueError unless `request_id` is a request id and `queue` a follow-up queue."""
    problem = request_id_problem(request_id)
    if problem:
        raise ValueError(f"request id {request_id!r:.80}: {problem}")
    problem = queue_problem(queue)
    if problem:
        raise ValueError(f"queue {queue!r:.80}: {problem}")


class RedisMessages:
    """Builds kombu Redis transport messages for one Celery app, whose broker is the Redis
    (and database) that the Lua script writes to."""

    def __init__(self, app: Celery, db: int) -> None:
        self.app = app
        self.origin = anon_nodename()  # what Celery's producer calls itself: gen<pid>@host
        self.event_channel = f"/{db}.celeryev/task.sent"  # kombu's fanout_patterns topic

    def build(self, request_id: str, request: dict[str, Any], queue: str) -> InlineMessage:
        check_destination(request_id, queue)
        return InlineMessage(
            queue=queue,
            message=self.task_message(request_id, request, queue),
            event_channel=self.event_channel,
            event=self.sent_event(request_id, queue),
        )

    def task_message(self, request_id: str, request: dict[str, Any], queue: str) -> str:
        """Celery's task protocol 2 (`AMQP.as_task_v2`), in kombu's Redis envelope."""
        kwargsrepr = kwargs_repr(request_id)
        headers = {
            "lang": "py",
            "task": TASK_NAME,
            "id": request_id,
            "shadow": None,
            "eta": None,
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [None, None],
            "root_id": request_id,
            "parent_id": None,
            "argsrepr": ARGSREPR,
            "kwargsrepr": kwargsrepr,
            "origin": self.origin,
            "ignore_result": True,
            "replaced_task_nesting": 0,
            "stamped_headers": None,
            "stamps": {},
        }
        body = [
            [],
            {"request": request},
            {"callbacks": None, "errbacks": None, "chain": None, "chord": None},
        ]
        properties = {
            "correlation_id": request_id,
            "reply_to": self.app.thread_oid,
            "argsrepr": ARGSREPR,
            "kwargsrepr": kwargsrepr,
            "delivery_mode": 2,  # persistent
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
        }
        return _envelope(body, headers, properties)

    def sent_event(self, request_id: str, queue: str) -> str:
        """The task-sent event, as Celery's EventDispatcher publishes it."""
        event = {
            "hostname": self.origin,
            "utcoffset": utcoffset(),
            "pid": os.getpid(),
            "clock": self.app.clock.forward(),
            "uuid": request_id,
            "root_id": request_id,
            "parent_id": None,
            "name": TASK_NAME,
            "args": ARGSREPR,
            "kwargs": kwargs_repr(request_id),
            "retries": 0,
            "eta": None,
            "expires": None,
            "queue": queue,
            "exchange": "",
            "routing_key": queue,
            "timestamp": time.time(),
            "type": "task-sent",
        }
        properties = {
            "delivery_mode": 1,  # transient, as for every event
            "delivery_info": {"exchange": "celeryev", "routing_key": "task.sent"},
            "priority": 0,
        }
        return _envelope(event, {"hostname": self.origin}, properties)


def _envelope(body: Any, headers: dict[str, Any], properties: dict[str, Any]) -> str:
    """kombu's virtual transport message: the JSON body, base64-encoded, with a delivery tag."""
    encoded = base64.b64encode(json.dumps(body).encode()).decode()
    properties = {**properties, "body_encoding": "base64", "delivery_tag": str(uuid.uuid4())}
    return json.dumps(
        {
            "body": encoded,
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": properties,
        }
    )
