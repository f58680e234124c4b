"""`followup enqueue --file` at campaign scale (issue 25.5): checked first, each error named
by its line; enqueued in batches, ids printed as recorded; a progress bar on a terminal only;
an empty file says so."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import termios
import uuid
from pathlib import Path

import pytest

from followup.cli import batch_file
from followup.worker.store import StatusStore
from tests.conftest import FOLLOWUP_BIN, followup

pytestmark = pytest.mark.integration


def _line(n: int) -> str:
    return json.dumps(
        {
            "contact_id": f"c-{n}",
            "user_id": "u-1001",
            "phone_number": f"+6129876{n % 10000:04d}",
        }
    )


def _campaign(tmp_path: Path, count: int, replace: dict[int, str] | None = None) -> Path:
    path = tmp_path / "campaign.jsonl"
    with path.open("w") as file:
        for n in range(1, count + 1):
            file.write((replace or {}).get(n, _line(n)) + "\n")
    return path


@pytest.fixture
def queue(private_queue: str) -> dict[str, str]:
    """A queue no worker consumes: the requests are recorded and stay queued."""
    return {"FOLLOWUP_QUEUE": private_queue}


def test_broken_json_is_named_by_its_line(tmp_path: Path, queue: dict[str, str]) -> None:
    path = _campaign(tmp_path, 7_100, {7_000: '{"contact_id": "c-1", "user_id" "u-1"}'})
    result = followup("enqueue", "--file", str(path), env=queue)
    assert result.returncode == 2
    assert "line 7000: not JSON" in result.stderr, result.stderr
    assert result.stdout == ""  # nothing enqueued: every line is checked first


def test_a_bad_request_is_named_by_its_line(tmp_path: Path, queue: dict[str, str]) -> None:
    bad = json.dumps({"contact_id": "c-5000", "user_id": "u-1001", "phone_number": "+612987"})
    path = _campaign(tmp_path, 5_100, {5_000: bad})
    result = followup("enqueue", "--file", str(path), env=queue)
    assert result.returncode == 2
    assert "line 5000: phone_number" in result.stderr, result.stderr
    assert "requests[" not in result.stderr


def test_a_json_array_is_named_by_line_too(tmp_path: Path, queue: dict[str, str]) -> None:
    bad = {"contact_id": "c-3", "user_id": "u-1001", "phone_number": "+612987"}
    items = [json.loads(_line(1)), json.loads(_line(2)), bad]
    path = tmp_path / "campaign.json"
    path.write_text("[\n" + ",\n".join(json.dumps(i) for i in items) + "\n]\n")
    result = followup("enqueue", "--file", str(path), env=queue)
    assert result.returncode == 2
    assert "line 4, item 3: phone_number" in result.stderr, result.stderr


def test_a_request_the_platform_cannot_take_is_named_by_its_line_before_any_is_enqueued(
    tmp_path: Path, queue: dict[str, str]
) -> None:
    """The platform's request rule is part of the checking pass: with CXone (numeric agent
    ids), a bad 501st line once let the first batch of 500 through, and ran again once
    fixed, the file enqueued those 500 twice."""
    good = [_line(n).replace('"u-1001"', '"1001"') for n in range(1, batch_file.BATCH + 1)]
    path = tmp_path / "campaign.jsonl"
    path.write_text("\n".join([*good, _line(batch_file.BATCH + 1)]) + "\n")
    cxone = {**queue, "FOLLOWUP_API_DIALECT": "cxone", "FOLLOWUP_CXONE_SKILL_ID": "4242"}
    result = followup("enqueue", "--file", str(path), env=cxone)
    assert result.returncode == 2
    assert "line 501: user_id: 'u-1001' is not a CXone agent id" in result.stderr, result.stderr
    assert result.stdout == ""  # nothing enqueued


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_an_empty_file_says_so(tmp_path: Path, queue: dict[str, str], content: str) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    result = followup("enqueue", "--file", str(path), env=queue)
    assert result.returncode == 2
    assert "holds no requests" in result.stderr and "Traceback" not in result.stderr


def test_a_campaign_is_enqueued_in_batches_with_every_id_printed_in_order(
    tmp_path: Path, queue: dict[str, str], store: StatusStore
) -> None:
    count = batch_file.BATCH * 2 + 7  # three batches
    path = _campaign(tmp_path, count)
    result = followup("enqueue", "--file", str(path), "--json", env=queue, timeout=300)
    assert result.returncode == 0, result.stderr
    shown = [json.loads(line) for line in result.stdout.splitlines()]
    assert [s["line"] for s in shown] == list(range(1, count + 1))
    records = [store.get(s["request_id"], history=False) for s in (shown[0], shown[-1])]
    assert [r.contact_id if r else None for r in records] == ["c-1", f"c-{count}"]
    assert "\r" not in result.stderr and "requests" not in result.stderr  # no bar on a pipe


def test_standard_input_works_too(tmp_path: Path, queue: dict[str, str]) -> None:
    path = _campaign(tmp_path, 3)
    result = subprocess.run(
        [FOLLOWUP_BIN, "enqueue", "--file", "-"],
        input=path.read_text(),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **queue},
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.split()) == 3


def test_a_terminal_gets_a_progress_bar(tmp_path: Path, queue: dict[str, str]) -> None:
    path = _campaign(tmp_path, batch_file.BATCH + 1)
    leader, follower = pty.openpty()
    # A terminal has a size; a fresh pseudo-terminal says 0x0, and tqdm would draw nothing.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(
        [FOLLOWUP_BIN, "enqueue", "--file", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=follower,
        env={**os.environ, **queue},
    )
    os.close(follower)
    seen = b""
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], 120)
            if not ready:
                break
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the other end closed
                break
            if not chunk:
                break
            seen += chunk
    finally:
        assert proc.wait(120) == 0
        os.close(leader)
    assert b"requests" in seen and b"%" in seen, seen[-500:]


def test_ids_are_recorded_as_they_are_printed(tmp_path: Path, queue: dict[str, str]) -> None:
    """The first batch is recorded before the file is read to its end: a later batch's
    conflict still leaves the earlier ones enqueued, and their ids printed."""
    key = f"k-{uuid.uuid4().hex[:8]}"
    first = json.dumps({**json.loads(_line(1)), "idempotency_key": key})
    clash = json.dumps({**json.loads(_line(2)), "idempotency_key": key})
    path = _campaign(tmp_path, batch_file.BATCH + 2, {1: first, batch_file.BATCH + 1: clash})
    result = followup("enqueue", "--file", str(path), env=queue, timeout=300)
    assert result.returncode == 2
    assert len(result.stdout.split()) == batch_file.BATCH + 1  # all but the clash
    assert f"line {batch_file.BATCH + 1}: idempotency_key" in result.stderr, result.stderr


def test_broken_json_gets_pythons_column_and_a_bom_and_crlf_are_read(
    tmp_path: Path, queue: dict[str, str]
) -> None:
    """Written by a Windows editor (a byte-order mark, CRLF): line 1 is read, and a broken
    line's column is the one Python gives for the line itself, not for its line ending."""
    broken = '{"contact_id": "c-3", "user_id": "u-1"'
    try:
        json.loads(broken)
    except json.JSONDecodeError as exc:
        expected = f"line 3: not JSON ({exc.msg}, column {exc.colno})"
    path = tmp_path / "windows.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join([_line(1), _line(2), broken, ""]).encode())
    result = followup("enqueue", "--file", str(path), env=queue)
    assert result.returncode == 2
    assert expected in result.stderr, result.stderr
    assert "line 1" not in result.stderr and "line 2" not in result.stderr, result.stderr


def test_ids_printed_beside_a_conflict_keep_their_line_in_json(
    tmp_path: Path, queue: dict[str, str]
) -> None:
    key = f"k-{uuid.uuid4().hex[:8]}"
    taken = tmp_path / "taken.jsonl"
    taken.write_text(json.dumps({**json.loads(_line(1)), "idempotency_key": key}) + "\n")
    assert followup("enqueue", "--file", str(taken), env=queue).returncode == 0
    clash = json.dumps({**json.loads(_line(2)), "idempotency_key": key})
    path = _campaign(tmp_path, 3, {2: clash})
    result = followup("enqueue", "--file", str(path), "--json", env=queue)
    assert result.returncode == 2
    printed = [json.loads(line) for line in result.stdout.splitlines()]
    assert [p.get("line") for p in printed] == [1, 3], result.stdout


def test_a_not_after_passing_between_the_check_and_its_batch_enqueues_every_line(
    tmp_path: Path, private_queue: str, store: StatusStore
) -> None:
    """The check judges every line's times at one moment, and each batch is enqueued as of
    that moment: a not_after that passes while earlier batches go is not refused then (after
    they were enqueued); its request is enqueued and fails in the worker, with a record."""
    from datetime import UTC, datetime, timedelta

    from followup.config.settings import load_settings
    from followup.tasks.producer import FollowUpClient

    checked_at = datetime.now(UTC) - timedelta(seconds=30)  # a long check of a big file
    passed = (checked_at + timedelta(seconds=10)).isoformat()  # still ahead when checked
    late = json.dumps({**json.loads(_line(3)), "not_after": passed})
    path = _campaign(tmp_path, 3, {3: late})
    assert batch_file.check(path, "campaign.jsonl", "conversations", checked_at) == 3
    client = FollowUpClient(load_settings({**os.environ, "FOLLOWUP_QUEUE": private_queue}))
    shown: list[tuple[int, str]] = []
    try:
        conflicts = batch_file.enqueue(client, path, 3, None, shown.extend, checked_at)
    finally:
        client.close()
    assert conflicts == []
    assert [line for line, _ in shown] == [1, 2, 3]
    assert all(store.get(request_id, history=False) for _, request_id in shown)
