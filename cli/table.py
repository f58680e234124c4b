"""Plain-text tables for people at a terminal.

Every value shown comes from a record that a message's sender wrote part of: each goes
through `printable`, so that no ESC, CR, LF or other control character reaches the terminal
(a payload could retitle it, move the cursor, or forge a "state placed" line).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from followup.worker.calling_hours import Explanation
from followup.worker.records import WAITING_STATES, StatusRecord

# C0 and C1 control characters, DEL, the Unicode line and paragraph separators, and the
# bidirectional overrides and isolates (which reorder what a line seems to say).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(value: object) -> str:
    """A value as a terminal may show it: each control character written as its escape
    (ESC as \\x1b, LF as \\n), so it is seen, never obeyed."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), str(value))


def render(headers: Sequence[str], rows: Sequence[Sequence[str]], max_width: int = 70) -> str:
    """Columns padded to their widest cell, each cut at max_width, except the last: an error
    message there is shown whole (the line simply runs on)."""
    shown = [[printable(c) for c in row] for row in rows]
    cells = [
        [
            c if len(c) <= max_width or i == len(row) - 1 else c[: max_width - 1] + "…"
            for i, c in enumerate(row)
        ]
        for row in shown
    ]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    widths[-1] = min(widths[-1], max(max_width, len(headers[-1])))  # the rule under it
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join([line.rstrip(), rule, *body])


def outcome(record: StatusRecord) -> str:
    """The conversation id if placed, else the last error in one line."""
    if record.conversation_id:
        return record.conversation_id
    if record.last_error:
        status = f"{record.last_error.status} " if record.last_error.status else ""
        return f"{status}{record.last_error.code}: {record.last_error.message}"
    if record.next_attempt_at and record.state in WAITING_STATES:
        why = f", waiting for {record.waiting_for}" if record.waiting_for else ""
        return f"next attempt {when(record.next_attempt_at)}{why}"
    return ""


def when(at: datetime, now: datetime | None = None) -> str:
    """A time for a table: with its date unless it is within the next 12 hours."""
    now = now or datetime.now(UTC)
    if timedelta(0) <= at - now <= timedelta(hours=12):
        return f"{at:%H:%M:%S} UTC"
    return f"{at:%Y-%m-%d %H:%M:%S} UTC"


def status_rows(records: Sequence[StatusRecord]) -> list[list[str]]:
    return [
        [r.request_id, r.contact_id or "-", r.state, str(r.attempts), outcome(r)] for r in records
    ]


STATUS_HEADERS = ("request id", "contact", "state", "attempts", "conversation id / error")


def describe(
    record: StatusRecord,
    hours: Explanation | None = None,
    *,
    not_before: datetime | None = None,
    next_at: datetime | None = None,
) -> str:
    """One request for people; with `hours`, its calling-hours decision as of now; with
    `next_at`, the next attempt its not_before (and calling hours then) put it at."""
    p = printable
    lines = [
        f"request   {p(record.request_id)}",
        f"state     {record.state}   attempts {record.attempts}",
        f"contact   {p(record.contact_id or '-')}   agent {p(record.user_id or '-')}   "
        f"number {p(record.phone_number or '-')}",
        f"created   {record.created_at:%Y-%m-%d %H:%M:%S} UTC   "
        f"updated {record.updated_at:%Y-%m-%d %H:%M:%S} UTC",
    ]
    if record.idempotency_key:
        lines.append(f"key       {p(record.idempotency_key)}")
    if record.conversation_id:
        lines.append(f"call      {p(record.conversation_id)}")
    if record.last_error:
        lines.append(f"error     {p(outcome(record))}")
        if record.last_error.context_id:
            lines.append(f"          platform context id {p(record.last_error.context_id)}")
        lines.extend(
            f"          - {p(e.get('field') or e.get('code'))}: {p(e.get('message'))}"
            for e in record.last_error.errors
        )
    if not_before is not None:
        lines.append(f"not before {not_before.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC")
    if next_at is not None:
        lines.append(
            f"next      {next_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC   waiting for not_before"
        )
    elif record.next_attempt_at:
        waiting = f"   waiting for {p(record.waiting_for)}" if record.waiting_for else ""
        lines.append(f"next      {record.next_attempt_at:%Y-%m-%d %H:%M:%S} UTC{waiting}")
        if record.next_attempt_local is not None:
            lines.append(
                f"          {record.next_attempt_local:%a %Y-%m-%d %H:%M} the customer's time "
                f"({p(record.customer_timezone)})"
            )
    if hours is not None:
        lines.append("calling hours, as of now")
        lines.extend(f"  {line}" for line in describe_hours(hours))
    lines.append("history")
    lines.append(
        render(
            ("at (UTC)", "attempt", "state", "event", "detail"),
            [
                [f"{h.at:%H:%M:%S.%f}"[:-3], str(h.attempt), h.state, h.event, h.detail or ""]
                for h in record.history
            ],
            max_width=100,
        )
    )
    return "\n".join(lines)


def render_stats(f: dict[str, Any]) -> str:
    """`followup stats` for a person."""

    def pairs(mapping: dict[str, Any]) -> str:
        return "  ".join(f"{k} {v}" for k, v in mapping.items() if v) or "none"

    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:g}s"

    queue = f["queue"]
    depth = "unknown" if queue["messages"] is None else queue["messages"]
    rate = f"{f['rate_limit_per_s']:g}/s"
    if f["rate_in_force_per_s"] < f["rate_limit_per_s"]:
        rate += f" (in force: {f['rate_in_force_per_s']:g}/s, after a 429)"
    breaker = f["breaker"]
    rows = [
        ("requests now", pairs(f["requests_now"])),
        ("outcomes, last hour", pairs(f["outcomes_last_hour"])),
        ("  settled by lookup", str(f["settled_by_lookup_last_hour"])),
        (
            "enqueue to placed",
            f"p50 {seconds(f['enqueue_to_placed_p50_s'])}  "
            f"p95 {seconds(f['enqueue_to_placed_p95_s'])} (last hour)",
        ),
        ("broker queue", f"{queue['name']}: {depth} messages"),
        ("waiting (due set)", f"{f['due_set']}: {pairs(f['waiting_by_reason'])}"),
        ("rate limit", rate),
        (
            "breaker",
            breaker["state"]
            + (f", {breaker['seconds_left']}s left" if breaker.get("seconds_left") else ""),
        ),
        ("outcomes lost", pairs(f.get("outcomes_lost", {}))),
        ("fleet-wide pauses", pairs({k: f"{v}s" for k, v in f["pauses_seconds_left"].items()})),
        (
            "workers answering",
            "unknown (the broker does not answer)"
            if f["workers"] is None
            else f"{len(f['workers'])}: {', '.join(f['workers']) or '-'}",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)


def describe_hours(e: Explanation) -> list[str]:
    """A calling-hours decision for people: the rule and its source, the customer's time in
    each zone, open or not, and when the window next opens."""
    checked = f" (checked {e.checked.isoformat()})" if e.checked else ""
    lines = [
        f"rule      {e.rule}: {e.source}{checked}",
        *(
            f"{'zones' if n == 0 else '':<10}{zone}: {local[:16].replace('T', ' ')} local"
            for n, (zone, local) in enumerate(zip(e.zones, e.local_times, strict=True))
        ),
    ]
    if e.holidays:
        lines.append(f"holidays  no calls on the public holidays of {', '.join(e.holidays)}")
    state = "open" if e.open else "closed" + (f": {e.holiday}" if e.holiday else "")
    lines.append(f"at        {e.at:%Y-%m-%d %H:%M:%S} UTC: {state}")
    if e.next_opening is None:
        lines.append("opens     not within the next 16 days")
    elif not e.open:
        local = e.next_opening.astimezone(ZoneInfo(e.zones[0]))
        lines.append(
            f"opens     {e.next_opening:%Y-%m-%d %H:%M:%S} UTC ({local:%a %Y-%m-%d %H:%M} in "
            f"{e.zones[0]})"
        )
    return lines


def describe_cap(cap: dict[str, Any]) -> str:
    """The per-number cap as `followup hours` found it (see cli.main._number_cap)."""
    if not cap["max_calls"]:
        return "cap       none (FOLLOWUP_PER_NUMBER_MAX_CALLS=0)"
    limit = f"{cap['max_calls']} calls in {cap['window_s']:g}s"
    if cap["calls"] is None:
        return f"cap       {limit}; the status store did not answer, so calls so far are unknown"
    line = f"cap       {cap['calls']} of {limit}, as of now"
    if cap["next_free"]:
        line += f": full until {cap['next_free'][:19].replace('T', ' ')} UTC"
    return line
