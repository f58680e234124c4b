"""The demo leaves nothing behind in the user's Redis or /tmp, or says where it is and how
to remove it (issue 25.7)."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from followup.cli.local_stack import PrivateRedis
from tests.conftest import FOLLOWUP_BIN

pytestmark = pytest.mark.integration


@pytest.fixture
def users_redis() -> Iterator[str]:
    """A Redis of its own, as a user's would be: other tests run demos too (the README's),
    and their keys in a shared Redis would be taken for this demo's leftovers."""
    private = PrivateRedis()
    try:
        yield private.url
    finally:
        private.stop()


def _demo(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOLLOWUP_")}
    env["FOLLOWUP_REDIS_URL"] = redis_url
    return subprocess.run(
        [FOLLOWUP_BIN, "demo", *args], env=env, capture_output=True, text=True, timeout=600
    )


def _demo_keys(redis_url: str) -> list[bytes]:
    return list(redis.Redis.from_url(redis_url).scan_iter(match="*followup-demo*", count=1000))


def test_the_demo_cleans_up_unless_asked_to_keep(users_redis: str) -> None:
    redis_url = users_redis
    demo = _demo(redis_url)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    logs = re.search(r"logs in (\S+)\)", demo.stdout)
    assert logs and not Path(logs.group(1)).exists()
    assert "cleaned up" in demo.stdout
    assert _demo_keys(redis_url) == []
    # The broker's binding-table index, which the demo's workers made, goes too.
    assert not redis.Redis.from_url(redis_url).exists("_kombu.binding_deadlines")

    # One that was there before (the user's own workers') stays.
    redis.Redis.from_url(redis_url).zadd("_kombu.binding_deadlines", {"users-own": 1})
    kept = _demo(redis_url, "--keep")
    try:
        assert kept.returncode == 0, kept.stdout + kept.stderr
        logs = re.search(r"logs in (\S+)\)", kept.stdout)
        assert logs and Path(logs.group(1)).is_dir()
        assert "FOLLOWUP_NAMESPACE=followup-demo followup list" in kept.stdout
        assert f"rm -r {logs.group(1)}" in kept.stdout
        assert _demo_keys(redis_url)
        assert redis.Redis.from_url(redis_url).exists("_kombu.binding_deadlines")
    finally:
        client = redis.Redis.from_url(redis_url)
        for key in _demo_keys(redis_url):
            client.delete(key)
        if logs:
            subprocess.run(["rm", "-r", logs.group(1)], check=False)
