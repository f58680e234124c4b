"""Flower, started for real on each broker: operators see every request, never a phone
number in the clear, and other services can enqueue through its HTTP API."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from followup.cli.local_stack import delete_broker_queue, free_port, wait_until
from tests.conftest import Fleet, foreign_client, unique

pytestmark = pytest.mark.integration
NUMBER = "+61298765487"


@dataclass
class FlowerOn:
    url: str
    fleet: Fleet


@pytest.fixture(scope="module")
def flower(env: dict[str, str], broker: str, queue_name: str, log_dir: Path) -> Iterator[FlowerOn]:
    """Flower for real, on each broker, listening to the events of a worker there."""
    queue = f"{queue_name}-flower-{broker.partition(':')[0]}"
    fleet = Fleet({**env, "FOLLOWUP_BROKER_URL": broker, "FOLLOWUP_QUEUE": queue}, log_dir)
    fleet.start_worker()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (log_dir / f"flower-{port}.log").open("w")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "celery"),
            "-A",
            "followup",
            "flower",
            f"--port={port}",
            "--address=127.0.0.1",
        ],
        env={**fleet.process_env(), "FLOWER_UNAUTHENTICATED_API": "true"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: _answers(f"{url}/healthcheck"), 30, "flower", interval_s=0.2)
        # Flower keeps only the events it receives while listening: a task's name comes with
        # its task-sent or task-received event. Before any test sends, a warm-up request must
        # be seen through to success, so the event receiver is known to be listening; one
        # sent before it listened is never seen, so a new one goes every few seconds.
        warm_ups: list[str] = []

        def seen_one() -> bool:
            if len(warm_ups) < 10 and not any(_task(url, t) for t in warm_ups[-1:]):
                warm_ups.append(
                    fleet.enqueue(contact_id=unique(), user_id="u-1001", phone_number=NUMBER)
                )
            return any(_task(url, t).get("state") == "SUCCESS" for t in warm_ups)

        wait_until(seen_one, 60, "flower to see a task through", interval_s=2)
        yield FlowerOn(url, fleet)
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
        fleet.close()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _task(url: str, task_id: str) -> dict[str, Any]:
    """The task as Flower holds it; {} while Flower's API is not up yet (it answers its
    healthcheck a moment before the API answers)."""
    try:
        response = httpx.get(f"{url}/api/tasks", params={"limit": 1000}, timeout=5)
        return dict(response.json().get(task_id) or {})
    except (httpx.HTTPError, ValueError):
        return {}


def flower_task(
    url: str, task_id: str, state: str = "SUCCESS", timeout_s: float = 15
) -> tuple[dict[str, Any], str]:
    """The task as Flower shows it once it is in `state`, and Flower's whole answer."""

    def shown() -> tuple[dict[str, Any], str] | None:
        response = httpx.get(f"{url}/api/tasks", params={"limit": 1000}, timeout=5)
        task = response.json().get(task_id)
        return (task, response.text) if task and task.get("state") == state else None

    return wait_until(shown, timeout_s, f"flower to show {task_id} as {state}", 0.2)


def send_via_flower(url: str, queue: str) -> httpx.Response:
    """What another service does: Flower's send-task API, the request as JSON kwargs."""
    request = {"contact_id": unique(), "user_id": "u-1002", "phone_number": NUMBER}
    return httpx.post(
        f"{url}/api/task/send-task/followup.place_call",
        json={"kwargs": {"request": request}, "queue": queue},
        timeout=10,
    )


def test_flower_shows_a_foreign_services_task_with_the_number_masked(
    flower: FlowerOn, broker: str, wait_for: Any
) -> None:
    crm = foreign_client(broker)
    request = {
        "contact_id": unique(),
        "user_id": "u-1001",
        "phone_number": NUMBER,
        "reason": "call Jane Doe back",
        "metadata": {"email": "jane.doe@example.com"},
    }
    sent = crm.send_task(
        "followup.place_call", queue=flower.fleet.queue, kwargs={"request": request}
    )
    wait_for(sent.id, "placed")

    task, raw = flower_task(flower.url, sent.id)
    assert task["name"] == "followup.place_call"
    assert task["result"] == "'placed'"
    assert "+61*******87" in task["kwargs"]
    assert "'reason': '<18 chars>'" in task["kwargs"]  # keys and sizes, never values
    for personal in (NUMBER, "Jane Doe", "jane.doe@example.com"):
        assert personal not in raw


def test_other_services_can_enqueue_through_flowers_http_api(
    flower: FlowerOn, wait_for: Any
) -> None:
    response = send_via_flower(flower.url, flower.fleet.queue)
    assert response.status_code == 200
    task_id = response.json()["task-id"]

    wait_for(task_id, "placed")
    _, raw = flower_task(flower.url, task_id)
    assert NUMBER not in raw


def test_a_task_sent_through_flower_is_masked_before_any_worker_sees_it(
    flower: FlowerOn,
) -> None:
    idle_queue = (
        f"{flower.fleet.queue}-idle"  # no worker consumes it: Flower knows only the sent event
    )
    try:
        response = send_via_flower(flower.url, idle_queue)
        task, raw = flower_task(flower.url, response.json()["task-id"], state="PENDING")
    finally:
        delete_broker_queue(flower.fleet.client.settings, idle_queue)
    assert "+61*******87" in task["kwargs"]
    assert NUMBER not in raw


def test_flower_sees_each_enqueued_request_sent_received_and_succeeded(
    flower: FlowerOn, wait_for: Any
) -> None:
    """On the Redis broker the producer writes the message and its task-sent event itself
    (one Lua script); Flower must see them exactly as it sees Celery's own."""
    request_id = flower.fleet.enqueue(contact_id=unique(), user_id="u-1001", phone_number=NUMBER)
    wait_for(request_id, "placed")

    task, raw = flower_task(flower.url, request_id)
    assert task["name"] == "followup.place_call"
    assert task["sent"] and task["received"] and task["succeeded"]
    # kwargs come from whichever event Flower saw last: the request id, or the masked request
    assert request_id in task["kwargs"] or "+61*******87" in task["kwargs"]
    assert NUMBER not in raw


def _listening_addresses(port: int) -> set[str]:
    """The local addresses of the TCP sockets listening on `port` (from /proc/net/tcp{,6})."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def test_flower_started_the_readme_way_listens_on_loopback_only(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """`celery -A followup flower --basic-auth=...` (no --address): 127.0.0.1 unless told."""
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FLOWER_")}
    with (tmp_path / "flower.log").open("w") as log:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "celery"),
                "-A",
                "followup",
                "flower",
                f"--port={port}",
                "--basic-auth=ops:secret",
            ],
            env={**environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(
                lambda: bool(_listening_addresses(port)) or proc.poll() is not None, 30, "flower"
            )
            assert proc.poll() is None, (tmp_path / "flower.log").read_text()
            # 0100007F is 127.0.0.1 as /proc writes it; every interface would be 00000000.
            assert _listening_addresses(port) == {"0100007F"}
        finally:
            proc.terminate()
            proc.wait(15)


def test_a_foreign_task_is_shown_rejected_with_its_arguments_masked(
    flower: FlowerOn, broker: str, wait_for: Any
) -> None:
    """Issue 26.7: a task other than place_call is refused before Celery reports it, so its
    sender's argsrepr never reaches Flower; Flower shows the refusal, with the masked summary."""
    crm = foreign_client(broker)
    sent = crm.send_task(
        "celery.accumulate",
        args=[NUMBER, "call Jane Doe back"],
        queue=flower.fleet.queue,
        argsrepr=f"['{NUMBER}', 'call Jane Doe back']",
    )
    wait_for(sent.id, "rejected", timeout_s=60)

    task, raw = flower_task(flower.url, sent.id, state="FAILURE", timeout_s=60)
    assert task["name"] == "celery.accumulate"
    assert "is not run here" in task["exception"]
    assert task["args"] == "['<12 chars>', '<18 chars>']"  # sizes, never values
    for personal in (NUMBER, "Jane Doe"):
        assert personal not in raw
