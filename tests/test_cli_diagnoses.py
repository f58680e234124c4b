"""The CLI and the worker diagnose what is wrong in one line, naming the setting: no
tracebacks, no wrong diagnosis (issue 25.4)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from followup.cli.local_stack import Worker, free_port, wait_until
from followup.worker.records import StatusRecord
from followup.worker.store import StatusStore
from tests.conftest import followup, unique

pytestmark = pytest.mark.integration
NUMBER = "+61298765432"


def _dead_broker() -> str:
    return f"amqp://guest:guest@127.0.0.1:{free_port()}//"  # nothing listens there


def test_stats_with_the_broker_down_says_so_in_one_line(env: dict[str, str]) -> None:
    result = followup("stats", env={"FOLLOWUP_BROKER_URL": _dead_broker()}, timeout=120)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1
    assert "states" in result.stdout or "placed" in result.stdout  # the store's figures still show
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "broker" in lines[0] and "FOLLOWUP_BROKER_URL" in lines[0]
    assert "guest:guest" not in lines[0]  # the URL's password is never shown


def test_enqueue_with_the_broker_down_records_it_and_says_the_sweeper_will_publish(
    env: dict[str, str], store: StatusStore
) -> None:
    result = followup(
        "enqueue",
        "--contact-id",
        unique(),
        "--user-id",
        "u-1001",
        "--phone-number",
        NUMBER,
        env={"FOLLOWUP_BROKER_URL": _dead_broker()},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    request_id = result.stdout.strip()
    record = store.get(request_id)
    assert record is not None and record.state == "queued"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "recorded" in lines[0] and "sweeper" in lines[0] and "FOLLOWUP_BROKER_URL" in lines[0]


@pytest.mark.parametrize("count", ["0", "-3"])
def test_outcomes_count_is_validated(env: dict[str, str], count: str) -> None:
    result = followup("outcomes", "--count", count)
    assert result.returncode == 2
    assert "--count" in result.stderr and "Redis" not in result.stderr


def test_a_wrong_api_address_names_the_url_and_the_setting(
    start_worker: Callable[..., Worker],
    store: StatusStore,
    wait_for: Callable[..., StatusRecord],
    private_queue: str,
    client: Any,
) -> None:
    wrong = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    worker = start_worker(FOLLOWUP_API_BASE_URL=wrong, FOLLOWUP_QUEUE=private_queue)
    request_id = client.enqueue(
        contact_id=unique(), user_id="u-1001", phone_number=NUMBER, queue=private_queue
    )

    def named() -> StatusRecord | None:
        record = store.get(request_id)
        error = record.last_error if record else None
        return record if error and wrong in (error.message or "") else None

    record = wait_until(named, 30, "the error to name the URL")
    assert record.last_error is not None
    message = record.last_error.message or ""
    assert "FOLLOWUP_TOKEN_URL" in message or "FOLLOWUP_API_BASE_URL" in message, message
    assert record.attempts == 0  # a refused connection spends nothing
    assert wrong in worker.log()


def test_the_worker_ready_line_shows_dialect_api_and_redis_hosts_without_secrets(
    start_worker: Callable[..., Worker], private_queue: str, redis_url: str
) -> None:
    worker = start_worker(FOLLOWUP_QUEUE=private_queue)
    line = wait_until(
        lambda: next((x for x in worker.log().splitlines() if "worker ready" in x), None),
        30,
        "the worker ready line",
    )
    assert "dialect=conversations" in line or "'dialect': 'conversations'" in line, line
    assert "api=http://127.0.0.1:" in line or "'api': 'http://127.0.0.1:" in line, line
    assert "redis=redis://127.0.0.1:" in line or "'redis': 'redis://127.0.0.1:" in line, line
    assert "secret" not in line.lower()


def test_the_breaker_is_not_said_to_close_when_it_never_opened(
    start_worker: Callable[..., Worker],
    sim: Any,
    wait_for: Callable[..., StatusRecord],
    private_queue: str,
    client: Any,
) -> None:
    worker = start_worker(FOLLOWUP_QUEUE=private_queue, FOLLOWUP_BREAKER_FAILURES="5")
    sim.set_faults(script=["500"])  # one failure, then accepted: the breaker never opens
    request_id = client.enqueue(
        contact_id=unique(), user_id="u-1001", phone_number=NUMBER, queue=private_queue
    )
    wait_for(request_id, "placed", timeout_s=30)
    assert "breaker" not in worker.log()
