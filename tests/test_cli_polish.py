"""The CLI a user expects (issue 25.6): --version, --json everywhere (errors too), help with
descriptions and defaults, plain state names, dates on far-off times, whole error messages,
validated --limit, and a re-enqueued cancelled key said to be cancelled."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from followup.cli.main import _parser
from followup.cli.table import outcome, render, when
from followup.worker.records import ErrorInfo, State, StatusRecord
from tests.conftest import followup

COMMANDS = [name for name in _parser()._subparsers._group_actions[0].choices]  # type: ignore[union-attr]


def test_version() -> None:
    result = followup("--version")
    assert result.returncode == 0 and result.stdout.startswith("followup ")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_a_description_and_json(command: str) -> None:
    shown = followup(command, "--help").stdout
    assert "--json" in shown, command
    help_line = next(
        a.help
        for a in _parser()._subparsers._group_actions[0]._choices_actions  # type: ignore[union-attr]
        if a.dest == command
    )
    assert help_line and help_line in " ".join(shown.split()), command


def test_defaults_are_in_the_help() -> None:
    shown = followup("list", "--help").stdout
    assert "(default: 50)" in shown


@pytest.mark.integration
def test_errors_are_json_under_json(env: dict[str, str]) -> None:
    # `env`: the session's Redis (a private one where none is installed), never 6379's.
    missing = followup("status", f"no-such-{uuid.uuid4().hex}", "--json")
    assert missing.returncode == 1
    said = json.loads(missing.stderr)["error"]
    assert "no request with id" in said
    # A message published with send_task has no record until a worker takes it: say so.
    assert "no record yet: a message sent straight to the queue is recorded when a worker" in said
    invalid = followup("enqueue", "--contact-id", "c-1", "--json")
    assert invalid.returncode == 2
    fields = {e["field"] for e in json.loads(invalid.stderr)["errors"]}
    assert {"user_id", "phone_number"} <= fields
    usage = followup("list", "--limit", "0", "--json")
    assert usage.returncode == 2 and "--limit" in json.loads(usage.stderr)["error"]


def test_state_names_are_plain() -> None:
    result = followup("list", "--state", "nope")
    assert result.returncode == 2
    assert "<State." not in result.stderr and "'queued'" in result.stderr


@pytest.mark.parametrize("limit", ["0", "-1", "many"])
def test_limit_is_validated(limit: str) -> None:
    result = followup("list", "--limit", limit)
    assert result.returncode == 2 and "--limit" in result.stderr


def test_a_far_off_time_has_its_date() -> None:
    now = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    assert when(now + timedelta(hours=2), now) == "12:00:00 UTC"
    assert when(now + timedelta(hours=38), now) == "2026-11-30 00:00:00 UTC"
    record = StatusRecord(
        request_id="r-1",
        state=State.SCHEDULED,
        attempts=0,
        next_attempt_at=datetime.now(UTC) + timedelta(hours=38),
        waiting_for="calling_hours",
        created_at=now,
        updated_at=now,
    )
    assert f"{record.next_attempt_at:%Y-%m-%d}" in outcome(record)


def test_an_error_message_is_never_cut() -> None:
    message = "x" * 300
    record = StatusRecord(
        request_id="r-1",
        state=State.FAILED,
        attempts=1,
        last_error=ErrorInfo(code="http.400", message=message),
        created_at=datetime.now(UTC),
        updated_at=datetime.now(UTC),
    )
    assert message in render(("id", "error"), [["r-1", outcome(record)]])


@pytest.mark.integration
def test_re_enqueueing_a_cancelled_key_says_it_was_cancelled(
    env: dict[str, str], private_queue: str
) -> None:
    key = f"crm-{uuid.uuid4().hex[:8]}"
    request = [
        "enqueue",
        "--contact-id",
        "c-77",
        "--user-id",
        "u-1001",
        "--phone-number",
        "+61298765432",
        "--idempotency-key",
        key,
        "--queue",
        private_queue,
    ]
    first = followup(*request, check=True).stdout.strip()
    followup("cancel", first, check=True)
    again = followup(*request)
    assert again.returncode == 1
    assert again.stdout.strip() == first
    assert "cancelled" in again.stderr and key in again.stderr and "new key" in again.stderr


def test_demo_without_the_simulator_extra_says_how_to_install_it_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    """aiohttp hidden (as in a venv without the extra): exit 2 naming the install line, before
    anything is started, and no folder left in the temporary directory."""
    script = (
        "import sys; sys.modules['aiohttp'] = None\n"
        "from followup.cli.main import main\n"
        "sys.exit(main(['demo', '--json']))\n"
    )
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "pip install '.[simulator]'" in json.loads(result.stderr)["error"]
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_has_one_description_and_at_most_one_default(command: str) -> None:
    parser = _parser()._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        shown = formatter._expand_help(action) if action.help else ""
        assert shown.strip(), (command, action.dest)
        assert shown.count("default") <= 1, (command, action.dest, shown)
        assert "(default: None)" not in shown and "(default: [])" not in shown, (command, shown)


@pytest.mark.parametrize(
    "args",
    [("stats", "--timeout", "-5"), ("demo", "--timeout", "-1"), ("worker-check", "--timeout", "0")],
)
def test_a_timeout_must_be_more_than_zero(args: tuple[str, ...]) -> None:
    result = followup(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "argument --timeout: must be more than 0 seconds" in result.stderr


@pytest.mark.integration
def test_outcomes_on_an_empty_stream_says_there_are_none_yet(env: dict[str, str]) -> None:
    empty = {"FOLLOWUP_NAMESPACE": f"empty-{uuid.uuid4().hex[:8]}"}
    shown = followup("outcomes", env=empty)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("no outcomes yet") and len(shown.stdout.splitlines()) == 1
    as_json = followup("outcomes", "--json", env=empty)
    assert as_json.returncode == 0 and as_json.stdout == "", as_json.stdout


@pytest.mark.integration
def test_status_shows_a_future_not_before_and_the_real_next_time(private_queue: str) -> None:
    """Queued with not_before 3 days ahead, nobody has taken it: status says when, not now."""
    env = {"FOLLOWUP_QUEUE": private_queue}
    not_before = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    request_id = followup(
        "enqueue",
        "--contact-id",
        "c-nb",
        "--user-id",
        "u-nb",
        "--phone-number",
        "+61298765432",
        "--not-before",
        not_before.isoformat(),
        env=env,
        check=True,
    ).stdout.strip()
    shown = followup("status", request_id, env=env, check=True).stdout
    assert f"not before {not_before:%Y-%m-%d %H:%M:%S} UTC" in shown, shown
    next_line = next(line for line in shown.splitlines() if line.startswith("next "))
    next_at = datetime.strptime(
        next_line.split()[1] + " " + next_line.split()[2], "%Y-%m-%d %H:%M:%S"
    )
    assert next_at.replace(tzinfo=UTC) >= not_before, shown
    as_json = json.loads(followup("status", request_id, "--json", env=env, check=True).stdout)
    assert datetime.fromisoformat(as_json["next_attempt_at"]) >= not_before
    assert datetime.fromisoformat(as_json["not_before"]) == not_before
