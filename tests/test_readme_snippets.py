"""Every Python and shell snippet of the README runs as written, against a private Redis and
the simulator (issue 25.8). The few that cannot run inside a test are named, with the test
that covers each instead."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from followup.cli.local_stack import PrivateRedis, Simulator, wait_until

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BIN = Path(sys.executable).parent

# Shell lines a test cannot run as written, and where each is covered.
COVERED_ELSEWHERE = {
    "make demo": "tests/test_readme_demo.py runs the demo and compares its output",
    "make test": "the suite itself",
    "python3 -m venv": "tests/test_install.py",
    "pip install": "tests/test_install.py",
    "docker compose": "tests/test_compose.py (no Docker engine here)",
    "celery -A followup flower": "tests/test_flower.py starts it the README's way",
    "export ": "the placeholders' hosts do not exist; the test's own settings stand in",
}


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.S)


def shell_lines() -> list[str]:
    lines = []
    for block in blocks("sh"):
        for line in block.replace("\\\n", " ").splitlines():
            command = line.split(" #")[0].strip()
            if command:
                lines.append(command)
    return lines


@pytest.fixture(scope="module")
def stack() -> Iterator[dict[str, str]]:
    redis_server = PrivateRedis()
    sim = Simulator("--any-user")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOLLOWUP_")}
    env |= {
        "FOLLOWUP_REDIS_URL": redis_server.url,
        "FOLLOWUP_API_BASE_URL": sim.url,
        "FOLLOWUP_CLIENT_ID": "followup-demo",
        "FOLLOWUP_CLIENT_SECRET": "demo-secret",
        "FOLLOWUP_ENFORCE_CALLING_HOURS": "false",
        "FOLLOWUP_PER_USER_INTERVAL_S": "0",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    try:
        yield env
    finally:
        sim.stop()
        redis_server.stop()


def test_every_python_snippet_runs(stack: dict[str, str], tmp_path: Path) -> None:
    snippets = blocks("python")
    assert len(snippets) >= 2
    for n, snippet in enumerate(snippets):
        code = snippet.replace("redis://localhost:6379/0", stack["FOLLOWUP_REDIS_URL"])
        result = subprocess.run(
            [sys.executable, "-c", code],
            env=stack,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"snippet {n}:\n{snippet}\n{result.stderr[-3000:]}"


def test_every_shell_line_runs_or_is_covered_elsewhere(
    stack: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "requests.jsonl").write_text(
        '{"contact_id": "c-1", "user_id": "u-67890", "phone_number": "+61298765432"}\n'
    )
    request_id = ""
    ran = []
    for line in shell_lines():
        if any(line.startswith(prefix) for prefix in COVERED_ELSEWHERE):
            continue
        if line.startswith("celery -A followup worker"):
            _a_worker_comes_up(line, stack, tmp_path)
            ran.append(line)
            continue
        assert line.startswith("followup "), f"a README command no test runs: {line}"
        if "..." in line:  # "followup enqueue ... --not-before": the line before, and more
            line = line.replace(
                "...", "--contact-id c-2 --user-id u-67890 --phone-number +61298765437"
            )
        command = re.sub(r"\s*\[[^]]*\]", "", line).replace("ID", request_id or "none")
        result = subprocess.run(
            ["bash", "-c", command],
            env=stack,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "Traceback" not in result.stderr, (command, result.stderr)
        # `followup retry ID` on a request that is not failed or unknown is refused (exit 1).
        expected = 1 if command.startswith("followup retry") else 0
        assert result.returncode == expected, (command, result.stdout, result.stderr)
        if command.startswith("followup enqueue") and not request_id:
            request_id = result.stdout.split()[0]
        ran.append(command)
    assert len(ran) >= 8, ran


def _a_worker_comes_up(line: str, env: dict[str, str], tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        proc = subprocess.Popen(["bash", "-c", f"exec {line}"], env=env, stdout=out, stderr=out)
        try:
            wait_until(
                lambda: " ready." in log.read_text() or proc.poll() is not None, 60, "the worker"
            )
            assert proc.poll() is None, log.read_text()[-3000:]
        finally:
            proc.terminate()
            proc.wait(30)
