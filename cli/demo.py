"""`followup demo`: the main job end to end against the bundled simulator.

Starts what is missing (a private Redis if none answers, the simulator, two workers: one
with good credentials, one whose token lacks conversation:write), enqueues a batch that
includes the seed thread's own mistakes, waits, prints the status table, stops everything.
Exit 0 when every request ended as expected and the simulator saw one call per placed request.
"""

from __future__ import annotations

import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import phonenumbers
import redis

from followup.cli.local_stack import Simulator, Stack, delete_keys, wait_until
from followup.cli.table import outcome, render
from followup.config.redaction import mask_url, url_host
from followup.config.settings import Settings
from followup.tasks.producer import FollowUpClient
from followup.tasks.publish import publish
from followup.tasks.request import InvalidRequest
from followup.worker.calling_hours import DEFAULT, next_opening, rule_for, zones_for
from followup.worker.records import TERMINAL_STATES

# Cities around the world, with a run of valid numbers in each: at any hour it is day in some
# and night in others. The demo dials daytime ones, and shows one night-time number waiting.
CITIES = {
    "Sydney": "+612987654{n:02d}",
    "London": "+4420794609{n:02d}",
    "New York": "+12125550{n:03d}",
    "Los Angeles": "+12135550{n:03d}",
    "Honolulu": "+18085550{n:03d}",
    "Tokyo": "+8131234{n:04d}",
    "Berlin": "+49301234{n:04d}",
    "Sao Paulo": "+5511312345{n:02d}",
    "Johannesburg": "+27115551{n:03d}",
    "Auckland": "+649300{n:04d}",
}


@dataclass(frozen=True)
class Numbers:
    """Daytime numbers to dial now, and a night-time one that must wait for its morning."""

    day_city: str
    night_city: str
    night_number: str
    night_opens: datetime

    def day(self, n: int) -> str:
        return _number(self.day_city, n)


def _number(city: str, n: int) -> str:
    template = CITIES[city]
    return template.format(n=100 + n if "{n:03d}" in template else n)


def pick_numbers(now: datetime) -> Numbers:
    """A city where calls may go now and for the next half hour, and one where it is night."""

    def opening(city: str, at: datetime) -> datetime | None:
        number = phonenumbers.parse(_number(city, 1))
        return next_opening(at, zones_for(number, None, "UTC"), rule_for(number, DEFAULT))

    open_now = [
        c
        for c in CITIES
        if opening(c, now) == now and opening(c, now + HALF_HOUR) == now + HALF_HOUR
    ]
    closed = [(c, o) for c in CITIES if (o := opening(c, now)) and o > now + timedelta(hours=1)]
    night_city, opens = closed[0]
    return Numbers(open_now[0], night_city, _number(night_city, 99), opens)


HALF_HOUR = timedelta(minutes=30)


@dataclass
class Row:
    label: str
    expect: str
    request_id: str | None = None
    note: str = ""


def run_demo(settings: Settings, timeout_s: float = 90.0, keep: bool = False) -> int:
    redis_url = settings.redis_url
    run = uuid.uuid4().hex[:6]
    queue = f"followup-demo-{run}"
    demo_settings = {
        "FOLLOWUP_NAMESPACE": NAMESPACE,  # removed after, unless --keep
        "FOLLOWUP_HTTP_TIMEOUT_S": "5",
        "FOLLOWUP_BACKOFF_BASE_S": "0.5",
        "FOLLOWUP_BACKOFF_MAX_S": "5",
        "FOLLOWUP_WORKER_CONCURRENCY": "4",
        # The demo's agents get a few follow-ups each in a few seconds: space them 2 s apart
        # (the default, 30 s, would make it wait), at the default fleet rate of 5 a second.
        "FOLLOWUP_PER_USER_INTERVAL_S": "2",
        # Its records stay, and every run dials the same numbers: no per-number cap here.
        "FOLLOWUP_PER_NUMBER_MAX_CALLS": "0",
    }
    numbers = pick_numbers(datetime.now(UTC))
    bindings_were_there = _has_key(redis_url, BINDING_DEADLINES)
    print(
        f"calling hours are on: daytime numbers are in {numbers.day_city}; "
        f"it is night in {numbers.night_city}"
    )
    with Stack(queue, redis_url, **demo_settings) as stack:
        if stack.started_private_redis:
            print(f"no Redis answers at {mask_url(redis_url)} (FOLLOWUP_REDIS_URL)")
        print(f"using {stack.redis_origin}")
        print(f"simulator at {stack.sim.url}; starting workers (logs in {stack.log_dir})")
        stack.start_worker("main")
        noscope_queue = f"{queue}-noscope"
        stack.start_worker(
            "noscope", FOLLOWUP_QUEUE=noscope_queue, FOLLOWUP_CLIENT_ID="followup-noscope"
        )
        client = FollowUpClient(stack.settings())
        try:
            rows = _enqueue_batch(client, stack.sim, run, queue, noscope_queue, numbers)
            ok = _report(client, rows, stack.sim, timeout_s)
        finally:
            client.close()
        ok = _genesys_part(stack, run, numbers, timeout_s) and ok
        ok = _cxone_part(stack, run, numbers, timeout_s) and ok
    print("demo " + ("passed" if ok else "FAILED"))
    _leave(stack, redis_url, run, keep=keep or not ok)
    if not stack.started_private_redis and bindings_were_there is False:
        delete_keys(redis_url, BINDING_DEADLINES)  # the broker's, made for the demo's workers
    return 0 if ok else 1


NAMESPACE = "followup-demo"
#: kombu's zset of binding tables (celery.pidbox's, say), which the demo's workers create in
#: the user's Redis: removed after the demo if it was not there before.
BINDING_DEADLINES = "_kombu.binding_deadlines"


def _has_key(redis_url: str, key: str) -> bool | None:
    """Whether the Redis at the URL has the key; None if it does not answer."""
    try:
        client = redis.Redis.from_url(redis_url, socket_timeout=5)
        try:
            return bool(client.exists(key))
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return None


def _leave(stack: Stack, redis_url: str, run: str, *, keep: bool) -> None:
    """Remove what the demo wrote (its records in the user's Redis, its queues, its log
    folder), or, when kept (--keep, or a failed run), say where they are and how to remove
    them."""
    shown = url_host(redis_url)
    if not keep:
        if not stack.started_private_redis:
            delete_keys(redis_url, f"{NAMESPACE}:*")
            delete_keys(redis_url, f"*{NAMESPACE}-{run}*")  # its queues (a Redis broker's keys)
        shutil.rmtree(stack.log_dir, ignore_errors=True)
        print(
            f"cleaned up: the demo's records ({NAMESPACE}:* at {shown}) and its logs; "
            "`followup demo --keep` keeps them to look at"
        )
        return
    if stack.started_private_redis:
        print("its records were in the private Redis, which is gone with it")
    else:
        print(
            f"kept: the demo's records, namespace {NAMESPACE} at {shown}: "
            f"FOLLOWUP_NAMESPACE={NAMESPACE} followup list; remove them with "
            f"redis-cli -u '{shown}' --scan --pattern '{NAMESPACE}*' | "
            f"xargs -r redis-cli -u '{shown}' del (or run the demo again without --keep)"
        )
    print(f"kept: its logs, in {stack.log_dir} (rm -r {stack.log_dir})")


def _genesys_part(stack: Stack, run: str, numbers: Numbers, timeout_s: float) -> bool:
    """A short second table: the same pipeline speaking Genesys Cloud's dialect to the
    simulator in genesys mode (the flat CreateCallRequest on /calls/user/{userId})."""
    print(
        "\nGenesys Cloud dialect (FOLLOWUP_API_DIALECT=genesys), against `followup simulator "
        "--dialect genesys`:"
    )
    sim = Simulator("--dialect", "genesys")
    queue = f"followup-demo-{run}-genesys"
    genesys = {
        "FOLLOWUP_API_DIALECT": "genesys",
        "FOLLOWUP_API_BASE_URL": sim.url,
        "FOLLOWUP_QUEUE": queue,
    }
    try:
        stack.start_worker("genesys", **genesys)
        noperm = {**genesys, "FOLLOWUP_QUEUE": f"{queue}-noperm"}
        stack.start_worker("genesys-noperm", **noperm, FOLLOWUP_CLIENT_ID="followup-noscope")
        client = FollowUpClient(stack.settings(**genesys))
        try:
            rows: list[Row] = []

            def enqueue(label: str, expect: str, queue: str | None = None, **fields: Any) -> None:
                rows.append(Row(label, expect, client.enqueue(queue=queue, **fields)))

            sim.set_faults(by_contact={"c-3002": ["429"]}, retry_after="1")
            enqueue(
                "valid, metadata as attributes",
                "placed",
                contact_id="c-3001",
                user_id="u-1001",
                phone_number=numbers.day(40),
                metadata={"ticket": "T-90"},
            )
            enqueue(
                "429, then accepted",
                "placed",
                contact_id="c-3002",
                user_id="u-1002",
                phone_number=numbers.day(41),
            )
            enqueue(
                "unknown agent u-99999",
                "failed",
                contact_id="c-3003",
                user_id="u-99999",
                phone_number=numbers.day(42),
            )
            enqueue(
                "client without conversation:call:add",
                "failed",
                queue=f"{queue}-noperm",
                contact_id="c-3004",
                user_id="u-1003",
                phone_number=numbers.day(43),
            )
            return _report(client, rows, sim, timeout_s)
        finally:
            client.close()
    finally:
        sim.stop()


def _cxone_part(stack: Stack, run: str, numbers: Numbers, timeout_s: float) -> bool:
    """A short third table: NICE CXone, a queue callback targeted at the agent
    (queuecallback's query string, a 202 with no body), against the simulator in cxone mode."""
    print(
        "\nNICE CXone dialect (FOLLOWUP_API_DIALECT=cxone), against `followup simulator "
        "--dialect cxone`:"
    )
    sim = Simulator("--dialect", "cxone")
    queue = f"followup-demo-{run}-cxone"
    cxone = {
        "FOLLOWUP_API_DIALECT": "cxone",
        "FOLLOWUP_API_BASE_URL": sim.url,
        "FOLLOWUP_TOKEN_URL": f"{sim.url}/auth/token",
        "FOLLOWUP_CLIENT_ID": "followup-demo",
        "FOLLOWUP_CLIENT_SECRET": "demo-secret",
        "FOLLOWUP_CXONE_ACCESS_KEY_ID": "followup-key",
        "FOLLOWUP_CXONE_ACCESS_KEY_SECRET": "key-secret",
        "FOLLOWUP_CXONE_SKILL_ID": "4242",
        "FOLLOWUP_QUEUE": queue,
    }
    try:
        stack.start_worker("cxone", **cxone)
        nocallback = {
            **cxone,
            "FOLLOWUP_QUEUE": f"{queue}-nocallback",
            "FOLLOWUP_CXONE_ACCESS_KEY_ID": "followup-nocallback",
        }
        stack.start_worker("cxone-nocallback", **nocallback)
        client = FollowUpClient(stack.settings(**cxone))
        try:
            rows: list[Row] = []

            def enqueue(label: str, expect: str, queue: str | None = None, **fields: Any) -> None:
                rows.append(Row(label, expect, client.enqueue(queue=queue, **fields)))

            sim.set_faults(by_number={numbers.day(51): ["429_bare"]})
            enqueue(
                "callback to agent 1001",
                "placed",
                contact_id="c-4001",
                user_id="1001",
                phone_number=numbers.day(50),
            )
            enqueue(
                "429 without Retry-After, then accepted",
                "placed",
                contact_id="c-4002",
                user_id="1002",
                phone_number=numbers.day(51),
            )
            enqueue(
                "unknown agent 99999",
                "failed",
                contact_id="c-4003",
                user_id="99999",
                phone_number=numbers.day(52),
            )
            enqueue(
                "access key without callbacks:create",
                "failed",
                queue=f"{queue}-nocallback",
                contact_id="c-4004",
                user_id="1003",
                phone_number=numbers.day(53),
            )
            return _report(client, rows, sim, timeout_s)
        finally:
            client.close()
    finally:
        sim.stop()


def _enqueue_batch(
    client: FollowUpClient,
    sim: Simulator,
    run: str,
    queue: str,
    noscope_queue: str,
    numbers: Numbers,
) -> list[Row]:
    rows: list[Row] = []

    def enqueue(label: str, expect: str, queue: str | None = None, **fields: Any) -> str | None:
        row = Row(label, expect)
        rows.append(row)
        try:
            row.request_id = client.enqueue(queue=queue, **fields)
        except InvalidRequest as exc:
            row.note = "; ".join(str(e) for e in exc.errors)
        return row.request_id

    # A flaky platform first, alone, so the scripted faults are its own: 503, then 429.
    sim.set_faults(script=["503", "429"], retry_after="1")
    flaky = enqueue(
        "503 then 429, then accepted",
        "placed",
        contact_id="c-2001",
        user_id="u-1001",
        phone_number=phonenumbers.format_number(  # spaces and all: it is normalised
            phonenumbers.parse(numbers.day(32)), phonenumbers.PhoneNumberFormat.INTERNATIONAL
        ),
        reason="invoice query",
    )
    _wait_settled(client, [Row("flaky", "placed", flaky)], 30)
    sim.set_faults()

    enqueue(
        "valid request",
        "placed",
        contact_id="c-2002",
        user_id="u-1002",
        phone_number=numbers.day(58),
        metadata={"ticket": "T-88"},
    )
    enqueue(
        f"night in {numbers.night_city}",
        "scheduled",
        contact_id="c-2009",
        user_id="u-67890",
        phone_number=numbers.night_number,
    )
    zone = zones_for(phonenumbers.parse(numbers.night_number), None, "UTC")[0]
    local = numbers.night_opens.astimezone(zone)
    rows[-1].note = f"its calling hours open {local:%a %H:%M} local time; not dialled before"
    key = f"crm-ticket-{run}"
    first = enqueue(
        "idempotency key, first",
        "placed",
        contact_id="c-2003",
        user_id="u-1003",
        phone_number=numbers.day(33),
        idempotency_key=key,
    )
    again = enqueue(
        "same key again",
        "placed",
        contact_id="c-2003",
        user_id="u-1003",
        phone_number=numbers.day(33),
        idempotency_key=key,
    )
    rows[-1].note = "same request id: not queued twice" if again == first else "NEW ID (bug)"
    enqueue(
        "seed: truncated +612987",
        "rejected at enqueue",
        contact_id="c-12345",
        user_id="u-67890",
        phone_number="+612987",
    )
    enqueue(
        "unknown agent u-99999",
        "failed",
        contact_id="c-2004",
        user_id="u-99999",
        phone_number=numbers.day(34),
    )
    enqueue(
        "token without conversation:write",
        "failed",
        queue=noscope_queue,
        contact_id="c-2005",
        user_id="u-1004",
        phone_number=numbers.day(35),
    )

    # Another service publishing straight to the queue, with the seed's truncated number.
    raw_id = uuid.uuid4().hex
    publish(
        client.app,
        raw_id,
        {
            "contact_id": "c-12345",
            "user_id": "u-67890",
            "phone_number": "+612987",
            "callType": "PERSONAL_CONNECTION",
        },
        queue,
    )
    rows.append(Row("raw send_task, seed payload", "rejected", raw_id))
    return rows


def _wait_settled(client: FollowUpClient, rows: list[Row], timeout_s: float) -> bool:
    """Until every request is terminal, or in the state its row expects (a night-time number
    waits, scheduled)."""
    store = client.store

    def done() -> bool:
        for row in rows:
            record = store.get(row.request_id, history=False) if row.request_id else None
            if row.request_id and (
                record is None
                or (record.state not in TERMINAL_STATES and record.state != row.expect)
            ):
                return False
        return True

    try:
        wait_until(done, timeout_s, "every request to finish", interval_s=0.2)
    except TimeoutError:
        return False
    return True


def _report(client: FollowUpClient, rows: list[Row], sim: Simulator, timeout_s: float) -> bool:
    started = time.monotonic()
    finished = _wait_settled(client, rows, timeout_s)
    store = client.store
    table, ok = [], finished
    placed_ids = set()
    for row in rows:
        record = store.get(row.request_id, history=False) if row.request_id else None
        state = record.state if record else "rejected at enqueue" if row.note else "missing"
        detail = row.note if record is None else outcome(record)
        if record and record.state == "placed":
            placed_ids.add(record.request_id)
        good = state == row.expect
        ok = ok and good
        table.append(
            [
                row.label,
                (row.request_id or "-")[:12],
                record.contact_id or "-" if record else "-",
                state,
                str(record.attempts) if record else "-",
                "ok" if good else f"expected {row.expect}",
                detail if not (row.note and record) else f"{detail} ({row.note})",
            ]
        )
    print()
    print(
        render(
            (
                "case",
                "request id",
                "contact",
                "state",
                "attempts",
                "check",
                "conversation id / error",  # last: shown whole, never cut
            ),
            table,
            max_width=90,
        )
    )
    calls = sim.calls()
    per_request = {c["correlation_id"] for c in calls}
    print(
        f"\nsimulator accepted {len(calls)} calls for {len(placed_ids)} placed requests "
        f"({time.monotonic() - started:.1f}s to settle)"
    )
    if len(calls) != len(placed_ids) or per_request != placed_ids:
        ok = False
        print("MISMATCH: every placed request must be exactly one call at the simulator")
    return ok
