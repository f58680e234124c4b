"""Fixtures: real Redis, real Celery workers, the real simulator; nothing starts at import.

Each test session gets its own status-store namespace and queue names, so it never touches
another session's (or a deployment's) keys. Redis: FOLLOWUP_TEST_REDIS_URL, default
redis://127.0.0.1:6379/15; if nothing answers there, a private redis-server is started for
the session and stopped after it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from kombu import Connection

from followup.cli.local_stack import (
    PrivateRedis,
    Simulator,
    Worker,
    delete_broker_queue,
    delete_keys,
    redis_answers,
    wait_until,
)
from followup.config.settings import Settings, load_settings
from followup.tasks.producer import FollowUpClient
from followup.worker.records import StatusRecord
from followup.worker.store import StatusStore

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
FOLLOWUP_BIN = str(Path(sys.executable).parent / "followup")

# Short timings, so that leases, redelivery and backoff play out within a test.
FAST = {
    "FOLLOWUP_HTTP_TIMEOUT_S": "1",
    "FOLLOWUP_CLAIM_LEASE_S": "6",
    "FOLLOWUP_REDELIVER_AFTER_S": "5",
    "FOLLOWUP_SWEEP_INTERVAL_S": "0.2",
    "FOLLOWUP_BACKOFF_BASE_S": "0.05",
    "FOLLOWUP_BACKOFF_MAX_S": "0.2",
    "FOLLOWUP_MAX_ATTEMPTS": "4",
    "FOLLOWUP_WORKER_CONCURRENCY": "4",
    # Pacing and the breaker off unless a test is about them: many tests call the same
    # agents back to back, and some make the platform fail on purpose.
    "FOLLOWUP_RATE_LIMIT_PER_S": "1000",
    "FOLLOWUP_PER_USER_INTERVAL_S": "0",
    "FOLLOWUP_BREAKER_FAILURES": "1000",
    # The per-number cap off too: many tests call the same few numbers.
    "FOLLOWUP_PER_NUMBER_MAX_CALLS": "0",
    # Calling hours off unless a test is about them: the tests run at any hour, and most use
    # Sydney numbers (night there from 10:00 to 21:00 UTC).
    "FOLLOWUP_ENFORCE_CALLING_HOURS": "false",
    "FOLLOWUP_LOG_LEVEL": "DEBUG",
}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """What a test measured (record_property("measured", ...)), printed after the run; with
    pytest-xdist too, which carries the properties back from its workers."""
    lines = [
        value
        for report in terminalreporter.stats.get("passed", [])
        for name, value in getattr(report, "user_properties", [])
        if name == "measured"
    ]
    if lines:
        terminalreporter.write_sep("-", "measured")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("FOLLOWUP_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    private = None if redis_answers(url) else PrivateRedis()
    yield private.url if private else url
    if private:
        private.stop()


RABBITMQ_URL = os.environ.get("FOLLOWUP_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")


def rabbitmq_answers(url: str) -> bool:
    try:
        with Connection(url, connect_timeout=2) as connection:
            connection.ensure_connection(max_retries=1)
        return True
    except Exception:  # kombu raises its transport's own connection errors
        return False


@pytest.fixture(scope="session", params=["redis", "rabbitmq"])
def broker(request: pytest.FixtureRequest, redis_url: str) -> str:
    """The broker the fleet tests run over: Redis, and RabbitMQ (quorum queues). Where no
    RabbitMQ answers, its runs are skipped with the reason; under CI=true they are required."""
    return redis_url if request.param == "redis" else rabbitmq_url()


def rabbitmq_url() -> str:
    """The test RabbitMQ's URL; where none answers, the test is skipped with the reason, or
    fails under CI=true."""
    if not rabbitmq_answers(RABBITMQ_URL):
        reason = f"no RabbitMQ answers at {RABBITMQ_URL} (FOLLOWUP_TEST_RABBITMQ_URL)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI=true requires it")
        pytest.skip(reason)
    return RABBITMQ_URL


def foreign_client(broker: str) -> Celery:
    """Another service's Celery client: it knows only the task name, the queue and JSON, and
    on RabbitMQ the two settings docs/producers.md gives it (a quorum queue on a topic exchange)."""
    app = Celery("crm", broker=broker, set_as_current=False)
    if broker.startswith("amqp"):
        app.conf.task_create_missing_queue_type = "quorum"
        app.conf.task_create_missing_queue_exchange_type = "topic"
        app.conf.broker_transport_options = {"confirm_publish": True}
    return app


class Fleet:
    """Workers and a client on one broker and a queue of this test's own."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.queue = env["FOLLOWUP_QUEUE"]
        self.log_dir = log_dir
        self.workers: list[Worker] = []
        self.client = FollowUpClient(load_settings(env))

    def start_worker(self, **overrides: str) -> Worker:
        w = Worker(
            {**self.env, **overrides},
            name=f"{self.queue[-6:]}-{len(self.workers)}-{uuid.uuid4().hex[:4]}",
            log_dir=self.log_dir,
        )
        self.workers.append(w)
        return w

    def process_env(self) -> dict[str, str]:
        """An environment for a child process with the fleet's settings."""
        return {**os.environ, **self.env}

    @property
    def on_rabbitmq(self) -> bool:
        return self.client.settings.broker_is_rabbitmq

    def enqueue(self, **fields: Any) -> str:
        return self.client.enqueue(**fields)

    def followup(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """The `followup` command with the fleet's broker and queue (`env` overriding)."""
        keep = ("FOLLOWUP_BROKER_URL", "FOLLOWUP_QUEUE")
        return followup(*args, env={**{k: self.env[k] for k in keep}, **env}, timeout=120)

    def close(self) -> None:
        for w in self.workers:
            if w.proc.poll() is None:
                w.stop()
        delete_broker_queue(self.client.settings)
        self.client.close()


@pytest.fixture
def fleet(env: dict[str, str], broker: str, private_queue: str, log_dir: Path) -> Iterator[Fleet]:
    f = Fleet({**env, "FOLLOWUP_BROKER_URL": broker, "FOLLOWUP_QUEUE": private_queue}, log_dir)
    yield f
    f.close()


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
def env(redis_url: str, sim: Simulator) -> Iterator[dict[str, str]]:
    """The session's FOLLOWUP_* settings. Workers get them; this process, a producer with
    the same settings, gets them in its environment for the length of the session."""
    values = {
        **FAST,
        "FOLLOWUP_REDIS_URL": redis_url,
        "FOLLOWUP_BROKER_URL": redis_url,
        "FOLLOWUP_NAMESPACE": f"test-{SESSION}",
        "FOLLOWUP_QUEUE": f"test-{SESSION}",
        "FOLLOWUP_CLIENT_ID": CLIENT_ID,
        "FOLLOWUP_CLIENT_SECRET": CLIENT_SECRET,
        "FOLLOWUP_API_BASE_URL": sim.url,
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in values.items():
            patch.setenv(name, value)
        yield values
    delete_keys(redis_url, f"*test-{SESSION}*")


@pytest.fixture(scope="session")
def settings(env: dict[str, str]) -> Settings:
    return load_settings(env)


@pytest.fixture(scope="session")
def client(settings: Settings) -> Iterator[FollowUpClient]:
    producer = FollowUpClient(settings)
    yield producer
    producer.close()


@pytest.fixture
def store(client: FollowUpClient) -> StatusStore:
    return client.store


@pytest.fixture(scope="session")
def queue_name(env: dict[str, str]) -> str:
    return env["FOLLOWUP_QUEUE"]


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("worker-logs")


@pytest.fixture(scope="session")
def worker(env: dict[str, str], log_dir: Path) -> Iterator[Worker]:
    """The session's main worker on the session's queue."""
    w = Worker(env, name=f"main-{SESSION}", log_dir=log_dir, celery_log_level="DEBUG")
    yield w
    w.stop()


@pytest.fixture
def start_worker(env: dict[str, str], log_dir: Path) -> Iterator[Callable[..., Worker]]:
    """start_worker(**env) -> a worker with the session's settings, `env` overriding them;
    every worker a test starts is stopped after it."""
    started: list[Worker] = []

    def start(**overrides: str) -> Worker:
        w = Worker(
            {**env, **overrides}, name=f"w{len(started)}-{uuid.uuid4().hex[:6]}", log_dir=log_dir
        )
        started.append(w)
        return w

    yield start
    for w in started:
        if w.proc.poll() is None:
            w.stop()


@pytest.fixture
def private_queue(queue_name: str) -> str:
    """A queue of this test's own: the workers it starts there see only its messages."""
    return f"{queue_name}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(autouse=True)
def _clean_sim(request: pytest.FixtureRequest) -> None:
    if "sim" in request.fixturenames:
        request.getfixturevalue("sim").reset()


@pytest.fixture
def wait_for(store: StatusStore) -> Callable[..., StatusRecord]:
    """wait_for(request_id, *states, timeout_s=15) -> the record once it is in one of states."""

    def _wait(request_id: str, *states: str, timeout_s: float = 15) -> StatusRecord:
        last: list[StatusRecord | None] = [None]

        def reached() -> StatusRecord | None:
            last[0] = store.get(request_id)
            return last[0] if last[0] is not None and last[0].state in states else None

        def describe() -> str:
            shown = last[0].model_dump_json(indent=1) if last[0] else None
            return f"request {request_id} in {states}; last: {shown}"

        return wait_until(reached, timeout_s, describe)

    return _wait


@pytest.fixture
def wait_event(store: StatusStore) -> Callable[..., StatusRecord]:
    """wait_event(request_id, event, timeout_s=10) -> the record once its history has it."""

    def _wait(request_id: str, event: str, timeout_s: float = 10) -> StatusRecord:
        def seen() -> StatusRecord | None:
            record = store.get(request_id)
            return record if record and any(h.event == event for h in record.history) else None

        return wait_until(seen, timeout_s, f"'{event}' in the history of {request_id}", 0.01)

    return _wait


def unique(prefix: str = "c") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def calls_for(sim: Simulator, request_id: str) -> list[dict[str, Any]]:
    return [c for c in sim.calls() if c["correlation_id"] == request_id]


def requests_for(sim: Simulator, request_id: str) -> list[dict[str, Any]]:
    return [r for r in sim.requests() if r["correlation_id"] == request_id]


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
