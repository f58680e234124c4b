"""Cost of an enqueue, per message, against a bare Celery send_task loop in the same run.

    .venv/bin/python bench/enqueue.py [N]

Uses FOLLOWUP_REDIS_URL (default redis://localhost:6379/0; a private redis-server if none
answers), in a namespace and queue of its own that it deletes after. No worker runs: this
measures the producer side only (validate, record with idempotency check, publish).
"""

from __future__ import annotations

import os
import platform
import sys
import time
import uuid

from followup.cli.local_stack import PrivateRedis, delete_keys, redis_answers
from followup.config.settings import load_settings
from followup.tasks.producer import FollowUpClient

N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
RUN = f"bench-{uuid.uuid4().hex[:6]}"


def requests(n: int, tag: str) -> list[dict[str, object]]:
    return [
        {
            "contact_id": f"c-{i}",
            "user_id": "u-67890",
            "phone_number": "+61298765432",
            "idempotency_key": f"{RUN}-{tag}-{i}",
        }
        for i in range(n)
    ]


def main() -> None:
    url = os.environ.get("FOLLOWUP_REDIS_URL", "redis://localhost:6379/0")
    private = None if redis_answers(url) else PrivateRedis()
    url = private.url if private else url
    client = FollowUpClient(
        load_settings(
            {
                **os.environ,
                "FOLLOWUP_REDIS_URL": url,
                "FOLLOWUP_BROKER_URL": url,
                "FOLLOWUP_NAMESPACE": RUN,
                "FOLLOWUP_QUEUE": RUN,
            }
        )
    )
    app, enqueue_follow_up, enqueue_many = client.app, client.enqueue, client.enqueue_many

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, CPython "
        f"{platform.python_version()}, N={N}, redis {url.split('@')[-1]}"
    )
    try:
        enqueue_follow_up(**requests(1, "warm")[0])  # connections, scripts loaded

        start = time.perf_counter()
        for request in requests(N, "bare"):
            app.send_task("followup.place_call", kwargs={"request": request}, queue=RUN)
        bare = (time.perf_counter() - start) / N
        print(f"baseline: bare send_task loop    {bare * 1000:7.3f} ms/message")

        start = time.perf_counter()
        for request in requests(N, "one"):
            enqueue_follow_up(**request)
        one = (time.perf_counter() - start) / N
        print(f"enqueue_follow_up, one by one    {one * 1000:7.3f} ms/message")

        start = time.perf_counter()
        enqueue_many(requests(N, "many"))
        many = (time.perf_counter() - start) / N
        print(f"enqueue_many, one batch          {many * 1000:7.3f} ms/message")
    finally:
        delete_keys(url, f"*{RUN}*")
        if private:
            private.stop()


if __name__ == "__main__":
    main()
