"""Fixtures for the integration tests: real Redis, real Celery workers, the real simulator.

Each test session gets its own status-store namespace and queue names, so it never touches
another session's (or a deployment's) keys. Redis: FOLLOWUP_TEST_REDIS_URL, default
redis://127.0.0.1:6379/15; if nothing answers there, a private redis-server is started.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cli.local_stack import PrivateRedis, Simulator, Worker, delete_keys, redis_answers

SESSION = uuid.uuid4().hex[:8]
CLIENT_ID, CLIENT_SECRET = "followup-test", "test-secret-7f3a9c"
NOSCOPE_ID = "followup-test-noscope"
TEST_USERS = ("u-67890", "u-1001", "u-1002")
# The request from the seed thread (shared/seed/): the campaign API's body, with callType.
SEED_PAYLOAD = {
    "contactId": "c-12345",
    "userId": "u-67890",
    "callType": "PERSONAL_CONNECTION",
    "phoneNumber": "+61298765432",
    "metadata": {"reason": "follow_up"},
}

_redis_url = os.environ.get("FOLLOWUP_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
_private: PrivateRedis | None = None
if not redis_answers(_redis_url):
    _private = PrivateRedis()
    _redis_url = _private.url

# The test process is a producer with the same settings as the workers it starts.
BASE_ENV = {
    "FOLLOWUP_REDIS_URL": _redis_url,
    "FOLLOWUP_BROKER_URL": _redis_url,
    "FOLLOWUP_NAMESPACE": f"test-{SESSION}",
    "FOLLOWUP_QUEUE": f"test-{SESSION}",
    "FOLLOWUP_CLIENT_ID": CLIENT_ID,
    "FOLLOWUP_CLIENT_SECRET": CLIENT_SECRET,
    "FOLLOWUP_HTTP_TIMEOUT_S": "1",
    "FOLLOWUP_CLAIM_LEASE_S": "6",
    "FOLLOWUP_REDELIVER_AFTER_S": "5",
    "FOLLOWUP_SWEEP_INTERVAL_S": "0.2",
    "FOLLOWUP_BACKOFF_BASE_S": "0.05",
    "FOLLOWUP_BACKOFF_MAX_S": "0.2",
    "FOLLOWUP_MAX_ATTEMPTS": "4",
    "FOLLOWUP_WORKER_CONCURRENCY": "4",
    "FOLLOWUP_LOG_LEVEL": "DEBUG",
}
os.environ.update(BASE_ENV)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    yield _redis_url
    delete_keys(_redis_url, f"*test-{SESSION}*")
    if _private is not None:
        _private.stop()


@pytest.fixture(scope="session")
def sim() -> Iterator[Simulator]:
    clients = [
        f"{CLIENT_ID}:{CLIENT_SECRET}:conversation:write,user:call:center:write",
        f"{NOSCOPE_ID}:{CLIENT_SECRET}:user:call:center:write",
    ]
    args = [a for c in clients for a in ("--client", c)]
    args += [a for u in TEST_USERS for a in ("--user", u)]
    simulator = Simulator(*args)
    yield simulator
    simulator.stop()


@pytest.fixture(scope="session")
def worker_env(sim: Simulator, redis_url: str) -> dict[str, str]:
    return {**BASE_ENV, "FOLLOWUP_API_BASE_URL": sim.url}


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("worker-logs")


@pytest.fixture(scope="session")
def worker(worker_env: dict[str, str], log_dir: Path) -> Iterator[Worker]:
    """The session's main worker on the default test queue."""
    w = Worker(worker_env, name=f"main-{SESSION}", log_dir=log_dir, celery_log_level="DEBUG")
    yield w
    w.stop()


@pytest.fixture(autouse=True)
def _clean_sim(request: pytest.FixtureRequest) -> None:
    if "sim" in request.fixturenames:
        request.getfixturevalue("sim").reset()


@pytest.fixture
def store(redis_url: str) -> Any:
    from worker.runtime import get_runtime

    return get_runtime().store


@pytest.fixture
def wait_for(store: Any) -> Callable[..., Any]:
    """wait_for(request_id, *states, timeout_s=15) -> the record once it is in one of states."""

    def _wait(request_id: str, *states: str, timeout_s: float = 15) -> Any:
        deadline = time.monotonic() + timeout_s
        record = None
        while time.monotonic() < deadline:
            record = store.get(request_id)
            if record is not None and record.state in states:
                return record
            time.sleep(0.05)
        raise AssertionError(
            f"request {request_id} not in {states} within {timeout_s}s; last: "
            f"{record.model_dump_json(indent=1) if record else None}"
        )

    return _wait


def unique(prefix: str = "c") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def calls_for(sim: Simulator, request_id: str) -> list[dict[str, Any]]:
    return [c for c in sim.calls() if c["correlation_id"] == request_id]


def requests_for(sim: Simulator, request_id: str) -> list[dict[str, Any]]:
    return [r for r in sim.requests() if r["correlation_id"] == request_id]


@pytest.fixture(scope="session")
def queue_name() -> str:
    return BASE_ENV["FOLLOWUP_QUEUE"]


FOLLOWUP_BIN = str(Path(sys.executable).parent / "followup")


def followup(
    *args: str, env: dict[str, str] | None = None, check: bool = False, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the `followup` command as a user would (env: variables to add or override)."""
    return subprocess.run(
        [FOLLOWUP_BIN, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
        env=None if env is None else {**os.environ, **env},
    )
