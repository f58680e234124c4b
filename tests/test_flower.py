"""Flower, started for real: operators see every request, never a phone number in the clear,
and other services can enqueue through its HTTP API."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from celery import Celery

from cli.local_stack import free_port, wait_until
from tests.conftest import unique

pytestmark = pytest.mark.integration
NUMBER = "+61298765487"


@pytest.fixture(scope="module")
def flower(worker_env: dict[str, str], log_dir: Path, worker: Any) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (log_dir / "flower.log").open("w")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "celery"),
            "-A",
            "worker",
            "flower",
            f"--port={port}",
            "--address=127.0.0.1",
        ],
        env={**os.environ, **worker_env, "FLOWER_UNAUTHENTICATED_API": "true"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def answers() -> bool:
        try:
            return httpx.get(f"{url}/healthcheck", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(answers, 30, "flower", interval_s=0.2)
    yield url
    proc.terminate()
    proc.wait(10)
    log.close()


def flower_task(
    url: str, task_id: str, state: str = "SUCCESS", timeout_s: float = 15
) -> tuple[dict[str, Any], str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = httpx.get(f"{url}/api/tasks", params={"limit": 1000}, timeout=5)
        tasks = response.json()
        task = tasks.get(task_id)
        if task and task.get("state") == state:
            return task, response.text
        time.sleep(0.2)
    raise AssertionError(f"flower never showed {task_id} as {state}")


def send_via_flower(url: str, queue: str) -> httpx.Response:
    """What another service does: Flower's send-task API, the request as JSON kwargs."""
    request = {"contact_id": unique(), "user_id": "u-1002", "phone_number": NUMBER}
    return httpx.post(
        f"{url}/api/task/send-task/followup.place_call",
        json={"kwargs": {"request": request}, "queue": queue},
        timeout=10,
    )


def test_flower_shows_a_foreign_services_task_with_the_number_masked(
    flower: str, redis_url: str, queue_name: str, wait_for: Any
) -> None:
    crm = Celery("crm", broker=redis_url, set_as_current=False)
    sent = crm.send_task(
        "followup.place_call",
        queue=queue_name,
        kwargs={"request": {"contact_id": unique(), "user_id": "u-1001", "phone_number": NUMBER}},
    )
    wait_for(sent.id, "placed")

    task, raw = flower_task(flower, sent.id)
    assert task["name"] == "followup.place_call"
    assert task["result"] == "'placed'"
    assert "+61*******87" in task["kwargs"]
    assert NUMBER not in raw


def test_other_services_can_enqueue_through_flowers_http_api(
    flower: str, queue_name: str, wait_for: Any
) -> None:
    response = send_via_flower(flower, queue_name)
    assert response.status_code == 200
    task_id = response.json()["task-id"]

    wait_for(task_id, "placed")
    _, raw = flower_task(flower, task_id)
    assert NUMBER not in raw


def test_a_task_sent_through_flower_is_masked_before_any_worker_sees_it(
    flower: str, queue_name: str
) -> None:
    idle_queue = f"{queue_name}-idle"  # no worker consumes it: Flower knows only the sent event
    response = send_via_flower(flower, idle_queue)
    task, raw = flower_task(flower, response.json()["task-id"], state="PENDING")
    assert "+61*******87" in task["kwargs"]
    assert NUMBER not in raw
