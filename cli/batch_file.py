"""`followup enqueue --file`: a campaign's requests, from JSON lines or one JSON array.

Two passes over the file, so that memory stays bounded and one bad line enqueues nothing:
the first parses and validates every request (each error named by its line number), the
second enqueues them in batches of BATCH (one Redis round trip each) and prints their ids as
they are recorded, with a progress bar on a terminal (tqdm; nothing on a pipe). JSON lines
are read a line at a time; a JSON array is read whole (use JSON lines for a large campaign).
Standard input ('-') is spooled to a temporary file for the second pass.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from followup.tasks.producer import FollowUpClient, IdempotencyConflict
from followup.tasks.request import FieldError, InvalidRequest, checked_request

BATCH = 500
MAX_ERRORS = 20  # shown; the rest are counted


@dataclass(frozen=True)
class Item:
    line: int  # where the request starts in the file (1-based)
    raw: Any  # as parsed: a mapping, if it is a request at all
    index: int | None = None  # in a JSON array: its place (1-based)

    @property
    def where(self) -> str:
        return f"line {self.line}" + (f", item {self.index}" if self.index else "")


@contextmanager
def opened(path: str) -> Iterator[Path]:
    """The file to read twice: the path itself, or standard input spooled to a temporary file."""
    if path != "-":
        try:
            Path(path).open("rb").close()
        except OSError as exc:
            message = f"cannot read it ({exc.strerror or type(exc).__name__}: {path})"
            raise InvalidRequest([FieldError(field="--file", message=message)]) from None
        yield Path(path)
        return
    with tempfile.NamedTemporaryFile("w+", suffix=".jsonl") as spool:
        shutil.copyfileobj(sys.stdin, spool)
        spool.flush()
        yield Path(spool.name)


def check(path: Path, shown_as: str, dialect: str, now: datetime) -> int:
    """Parse and validate every request as enqueue_many does (the platform's rule by
    `dialect`, times at `now`: enqueue() passes the same moment on, so no batch is refused
    after another was enqueued); InvalidRequest naming each bad line (the first MAX_ERRORS,
    then how many more), or the file holding none. Returns how many there are."""
    errors: list[FieldError] = []
    count = 0
    for item in _items(path, errors):
        count += 1
        try:
            checked_request(item.raw, dialect, now)
        except InvalidRequest as exc:
            errors += [
                FieldError(field=f"{item.where}: {e.field}", message=e.message) for e in exc.errors
            ]
    if errors:
        shown = errors[:MAX_ERRORS]
        if len(errors) > MAX_ERRORS:
            shown.append(FieldError(field="", message=f"... and {len(errors) - MAX_ERRORS} more"))
        raise InvalidRequest(shown)
    if count == 0:
        raise InvalidRequest(
            [FieldError(field="--file", message=f"{shown_as} holds no requests: nothing enqueued")]
        )
    return count


def enqueue(
    client: FollowUpClient,
    path: Path,
    total: int,
    queue: str | None,
    show: Callable[[list[tuple[int, str]]], None],
    checked_at: datetime,
) -> list[FieldError]:
    """Enqueue every request in batches, their times as check() judged them at checked_at (a
    not_after that passes meanwhile fails in the worker, with a record); `show` gets (line,
    id) pairs as each batch is recorded. Returns the idempotency conflicts (the rest of their
    batch is enqueued)."""
    conflicts: list[FieldError] = []
    with tqdm(total=total, unit=" requests", file=sys.stderr, disable=None, leave=False) as bar:
        for batch in _batches(_items(path, []), BATCH):
            try:
                ids = client.enqueue_many(
                    [item.raw for item in batch], queue=queue, checked_at=checked_at
                )
                show([(item.line, request_id) for item, request_id in zip(batch, ids, strict=True)])
            except IdempotencyConflict as exc:
                lines = [batch[n].line for n in exc.enqueued_at]
                show(list(zip(lines, exc.enqueued, strict=True)))
                key = exc.key
                where = next((i.where for i in batch if i.raw.get("idempotency_key") == key), "")
                conflicts += [
                    FieldError(field=f"{where or 'a line'}: {e.field}", message=e.message)
                    for e in exc.errors
                ]
            bar.update(len(batch))
    return conflicts


def _batches(items: Iterator[Item], size: int) -> Iterator[list[Item]]:
    batch: list[Item] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _items(path: Path, errors: list[FieldError]) -> Iterator[Item]:
    """The requests of a JSON-lines file (a line at a time) or of one JSON array; a part that
    is not JSON goes to `errors`, named by its line."""
    # utf-8-sig: a byte-order mark at the start (some editors write one) is not content.
    with path.open(encoding="utf-8-sig", errors="replace") as file:
        first = ""
        while not first:
            chunk = file.read(1)
            if not chunk or not chunk.isspace():
                first = chunk or "EOF"
        file.seek(0)
        if first == "[":
            yield from _array_items(file.read(), errors)
            return
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                # Without its line ending, so that an error's column is the line's own.
                yield Item(number, json.loads(line.rstrip("\r\n")))
            except ValueError as exc:
                errors.append(_not_json(number, exc))


def _array_items(text: str, errors: list[FieldError]) -> Iterator[Item]:
    """One JSON array's elements, each with the line it starts on."""
    decoder = json.JSONDecoder()
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError as exc:
        errors.append(_not_json(exc.lineno, exc))
        return
    if not isinstance(loaded, list):
        errors.append(FieldError(field="line 1", message="not a JSON array"))
        return
    position = text.index("[") + 1
    for index in range(1, len(loaded) + 1):  # decoded again one by one: where each starts
        while text[position] in " \t\r\n,":
            position += 1
        value, end = decoder.raw_decode(text, position)
        yield Item(text.count("\n", 0, position) + 1, value, index)
        position = end


def _not_json(line: int, exc: ValueError) -> FieldError:
    reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
    column = f", column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
    return FieldError(field=f"line {line}", message=f"not JSON ({reason}{column})")
