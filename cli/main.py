"""The `followup` command line. Exit codes: 0 ok, 1 failure, 2 bad input or configuration."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import importlib.metadata
import importlib.util
import json
import signal
import socket
import sys
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn
from zoneinfo import ZoneInfo

import redis
from tqdm import tqdm

from followup.cli import batch_file
from followup.cli.demo import run_demo
from followup.cli.table import (
    STATUS_HEADERS,
    describe,
    describe_cap,
    describe_hours,
    printable,
    render,
    render_stats,
    status_rows,
)
from followup.config.celery import create_app
from followup.config.logging import configure_logging
from followup.config.redaction import url_host
from followup.config.settings import ConfigError, Settings, check_environment, load_settings
from followup.simulator import command as simulator_command
from followup.tasks.outcomes import Outcome, follow, outcomes, recent
from followup.tasks.producer import FollowUpClient
from followup.tasks.request import (
    EARLIEST,
    LATEST,
    FieldError,
    FollowUpRequest,
    InvalidRequest,
    parse_request,
)
from followup.worker import stats
from followup.worker.calling_hours import Explanation, explain
from followup.worker.records import CANCEL_RULE, RETRY_RULE, STATES, TERMINAL_STATES
from followup.worker.store import StatusStore, UnconfirmedWrite
from followup.worker.sweeper import heartbeat_for

EXIT_FAILED = 1
EXIT_USAGE = 2


def main(argv: list[str] | None = None) -> int:
    """The command line's entry point: the one place (with the worker's) that configures
    logging, and that turns a bad setting or request into exit code 2."""
    global _json_errors
    _json_errors = "--json" in (sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    try:
        check_environment()  # every command, the simulator's too: a misspelt setting stops it
        return int(args.run(args))
    except KeyboardInterrupt:
        return 130
    except (InvalidRequest, ConfigError, redis.RedisError) as exc:
        return _report(exc)


_json_errors = False  # --json: errors too are one JSON object on standard error


def _error(message: str, errors: list[FieldError] | None = None) -> None:
    """An error for the person (or, with --json, the program) that ran the command: one
    line, never cut, every value printable."""
    if _json_errors:
        shown: dict[str, Any] = {"error": message}
        if errors is not None:
            shown["errors"] = [{"field": e.field, "message": e.message} for e in errors]
        print(json.dumps(shown), file=sys.stderr)
        return
    print(f"followup: {message}", file=sys.stderr)
    for error in errors or []:
        print(f"  {printable(error)}", file=sys.stderr)


class _HelpFormatter(argparse.HelpFormatter):
    """Each option's default once, at the end of its description: none when its description
    already gives it, or when there is none to give (a flag, an unset option)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if default in (None, False, [], argparse.SUPPRESS) or "default" in text:
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """argparse, with each subcommand's defaults in its help, and usage errors as JSON
    under --json."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        if _json_errors:
            print(
                json.dumps({"error": message, "usage": self.format_usage().strip()}),
                file=sys.stderr,
            )
            raise SystemExit(EXIT_USAGE)
        super().error(message)


def _report(exc: Exception) -> int:
    if isinstance(exc, InvalidRequest):
        _error("invalid follow-up request", exc.errors)
        return EXIT_USAGE
    if isinstance(exc, ConfigError):
        _error(f"{exc}")
        return EXIT_USAGE
    if isinstance(exc, UnconfirmedWrite):
        _error(
            f"{exc}: the primary has it, a replica not yet, so a failover now could lose it; "
            "run the command again (it is safe to)"
        )
        return EXIT_FAILED
    _error(f"cannot reach Redis ({exc}); check FOLLOWUP_REDIS_URL")
    return EXIT_FAILED


def _settings() -> Settings:
    """The settings, read once; the first read also configures logging for this process."""
    global _loaded
    if _loaded is None:
        _loaded = load_settings()
        configure_logging(_loaded)
    return _loaded


_loaded: Settings | None = None


def _store() -> StatusStore:
    return StatusStore.from_settings(_settings())


# --- commands ---------------------------------------------------------------------------


def cmd_enqueue(args: argparse.Namespace) -> int:
    if args.file:
        return _enqueue_file(args)
    metadata: dict[str, str] = {}
    for item in args.metadata:
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidRequest(
                [FieldError(field="metadata", message=f"'{key}' must be KEY=VALUE")]
            )
        metadata[key] = value
    fields = {
        "contact_id": args.contact_id,
        "user_id": args.user_id,
        "phone_number": args.phone_number,
        "reason": args.reason,
        "metadata": metadata,
        "idempotency_key": args.idempotency_key,
        "not_before": args.not_before,
        "not_after": args.not_after,
        "timezone": args.timezone,
    }
    request = {k: v for k, v in fields.items() if v not in (None, {})}
    client = FollowUpClient(_settings())
    request_id = client.enqueue(request, queue=args.queue)
    print(json.dumps({"request_id": request_id}) if args.json else request_id)
    if args.idempotency_key:
        record = client.store.get(request_id, history=False)
        if record is not None and record.state == "cancelled":
            _error(
                f"the idempotency key {printable(args.idempotency_key)} belongs to request "
                f"{request_id}, which was cancelled: it will not be dialled. To call this "
                "customer, enqueue with a new key"
            )
            return EXIT_FAILED
    return 0


def _enqueue_file(args: argparse.Namespace) -> int:
    """A batch from a file: every line checked first, then enqueued in batches, each id
    printed as it is recorded (with its line, in --json)."""

    def show(recorded: list[tuple[int, str]]) -> None:
        lines = [
            json.dumps(
                {"request_id": request_id, "line": line} if line else {"request_id": request_id}
            )
            if args.json
            else request_id
            for line, request_id in recorded
        ]
        if lines:
            tqdm.write("\n".join(lines), file=sys.stdout)

    shown_as = "standard input" if args.file == "-" else args.file
    with batch_file.opened(args.file) as path:
        settings = _settings()
        checked_at = datetime.now(UTC)
        total = batch_file.check(path, shown_as, settings.api_dialect, checked_at)
        client = FollowUpClient(settings)
        conflicts = batch_file.enqueue(client, path, total, args.queue, show, checked_at)
    if conflicts:
        raise InvalidRequest(conflicts)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    store = _store()
    record = store.get(args.request_id)
    if record is None:
        _error(
            f"no request with id {printable(args.request_id)}: no record yet: a message sent "
            "straight to the queue is recorded when a worker takes it"
        )
        return EXIT_FAILED
    request = store.request_of(record.request_id)
    hours = (
        explain(request.phone_number, request.timezone, datetime.now(UTC), _settings())
        if request is not None
        else None
    )
    not_before = request.not_before if request is not None else None
    next_at = None  # a not_before after the record's next attempt: the real next time
    if (
        request is not None
        and not_before is not None
        and record.state not in TERMINAL_STATES
        and (record.next_attempt_at is None or not_before > record.next_attempt_at)
    ):
        then = explain(request.phone_number, request.timezone, not_before, _settings())
        next_at = not_before if then.open else (then.next_opening or not_before)
    if args.json:
        shown = record.model_dump(mode="json")
        shown["not_before"] = not_before.isoformat() if not_before else None
        if next_at is not None:
            shown["next_attempt_at"] = next_at.isoformat()
        shown["calling_hours"] = hours.as_dict() if hours else None
        print(json.dumps(shown, indent=2))
    else:
        print(describe(record, hours, not_before=not_before, next_at=next_at))
    return 0


def cmd_hours(args: argparse.Namespace) -> int:
    """A number's calling-hours decision at --at (default now), enqueueing nothing."""
    fields = {"contact_id": "hours", "user_id": "hours", "phone_number": args.number}
    request = parse_request({**fields, "timezone": args.timezone} if args.timezone else fields)
    at = _instant("--at", args.at) if args.at else datetime.now(UTC)
    settings = _settings()
    hours = explain(request.phone_number, request.timezone, at, settings)
    cap = _number_cap(request.phone_number, settings)
    if args.json:
        print(json.dumps({**hours.as_dict(), "number_cap": cap}, indent=2))
    else:
        print("\n".join([*describe_hours(hours), describe_cap(cap)]))
    return 0


def _number_cap(phone_number: str, settings: Settings) -> dict[str, Any]:
    """The per-number cap as of now: its limit, the calls that count, when one frees up.
    Without a status store to ask, the calls are unknown (null), not an error."""
    cap: dict[str, Any] = {
        "max_calls": settings.per_number_max_calls,
        "window_s": settings.per_number_window_s,
        "calls": None,
        "next_free": None,
    }
    if settings.per_number_max_calls == 0:
        return cap
    try:
        sent = StatusStore.from_settings(settings).calls_to(phone_number)
    except redis.RedisError:
        return cap
    cap["calls"] = len(sent)
    if len(sent) >= settings.per_number_max_calls:
        frees = sent[len(sent) - settings.per_number_max_calls]
        cap["next_free"] = (frees + timedelta(seconds=settings.per_number_window_s)).isoformat()
    return cap


def _instant(flag: str, text: str) -> datetime:
    """An ISO 8601 time with its offset, in the range a request's times may take (the
    calling-hours arithmetic adds days to it: near year 1 or 9999 that overflows)."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise InvalidRequest(
            [
                FieldError(
                    field=flag,
                    message=f"'{text[:64]}' is not an ISO 8601 time with its offset; "
                    "write it as e.g. 2026-12-25T10:00:00+11:00 or 2026-12-24T23:00:00Z",
                )
            ]
        )
    try:
        instant = value.astimezone(UTC)
        in_range = EARLIEST <= instant < LATEST
    except OverflowError:  # e.g. 0001-01-01T00:00+01:00 is before what a datetime holds
        in_range = False
    if not in_range:
        raise InvalidRequest(
            [
                FieldError(
                    field=flag,
                    message=f"'{text[:64]}' is out of range; give a time between "
                    f"{EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d} (UTC)",
                )
            ]
        )
    return instant


def cmd_list(args: argparse.Namespace) -> int:
    store = _store()
    records = store.list_requests(args.state, limit=args.limit)
    if args.json:
        print(
            json.dumps([r.model_dump(mode="json", exclude={"history"}) for r in records], indent=2)
        )
    else:
        counts = "  ".join(f"{state} {n}" for state, n in store.counts().items() if n)
        print(f"all requests: {counts or 'none'}\n")
        print(render(STATUS_HEADERS, status_rows(records)))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    return _manual(args, "cancel", CANCEL_RULE)


def cmd_retry(args: argparse.Namespace) -> int:
    return _manual(args, "retry", RETRY_RULE)


def _manual(args: argparse.Namespace, action: str, rule: str) -> int:
    store = _store()
    ok, state = getattr(store, action)(args.request_id, args.by or _login())
    if not state:
        _error(f"no request with id {printable(args.request_id)}")
        return EXIT_FAILED
    if not ok:
        _error(f"request {printable(args.request_id)} is {state}; {rule}")
        return EXIT_FAILED
    shown: dict[str, Any] = {"request_id": args.request_id, "state": state}
    line = f"{printable(args.request_id)} {state}"
    if action == "retry":
        hours = _hours_of(store, args.request_id)
        shown.update(waits_for=None, next_opening=None)
        if hours is not None and not hours.open:
            # Said at once: the retry does not dial now, and why (issue 20.7).
            opening = hours.next_opening
            shown.update(waits_for="calling_hours", next_opening=_iso_or_none(opening))
            when = (
                f"the window next opens at {opening.isoformat()} (its local time: "
                f"{', '.join(_local(opening, z) for z in hours.zones)})"
                if opening is not None
                else "no calling hours open ahead"
            )
            line += f": outside the number's calling hours ({hours.rule}), it waits; {when}"
        shown["calling_hours"] = hours.as_dict() if hours is not None else None
    print(json.dumps(shown, indent=2) if getattr(args, "json", False) else line)
    return 0


def _hours_of(store: StatusStore, request_id: str) -> Explanation | None:
    """The calling-hours decision for a stored request now (None: no request to read)."""
    request = store.request_of(request_id)
    if request is None:
        return None
    return explain(request.phone_number, request.timezone, datetime.now(UTC), _settings())


def _iso_or_none(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _local(moment: datetime, zone: str) -> str:
    return moment.astimezone(ZoneInfo(zone)).strftime(f"%Y-%m-%d %H:%M {zone}")


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user with no passwd entry
        return "operator"


def cmd_stats(args: argparse.Namespace) -> int:
    settings = _settings()
    store = StatusStore.from_settings(settings)
    figures = stats.read(store, stats.now(store)).as_dict()
    app = create_app(settings)
    depth = _queue_depth(app, settings.queue)
    figures["queue"] = {"name": settings.queue, "messages": depth}
    # With the broker down, the store's figures still show; the broker's are unknown (None).
    figures["workers"] = (
        sorted(name for reply in app.control.ping(timeout=args.timeout) or [] for name in reply)
        if depth is not None
        else None
    )
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(render_stats(figures))
    if depth is None:
        _error(
            f"the broker at {url_host(settings.effective_broker_url)} does not answer:"
            " the queue and the workers are unknown; check FOLLOWUP_BROKER_URL"
        )
        return EXIT_FAILED
    return 0


def _queue_depth(app: Any, queue: str) -> int | None:
    """Messages waiting in the broker's queue (None if the broker does not answer: asked
    once, not with Celery's retries)."""
    try:
        with app.connection_for_read() as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=5)
            try:
                _, depth, _ = connection.default_channel.queue_declare(queue=queue, passive=True)
            except connection.channel_errors:
                return 0  # no such queue yet: nothing was ever published to it
            return int(depth)
    except Exception:  # the broker did not answer; the rest of the figures still show
        return None


def cmd_worker_check(args: argparse.Namespace) -> int:
    """Exit 0 when a worker consumes the follow-up queue and answers in time, else 1."""
    settings = _settings()
    app = create_app(settings)
    try:
        replies = app.control.inspect(timeout=args.timeout).active_queues() or {}
    except Exception as exc:  # the broker is unreachable: Celery raises its transport's errors
        _error(
            f"cannot ask the workers: the broker does not answer "
            f"({type(exc).__name__}); check FOLLOWUP_BROKER_URL"
        )
        return EXIT_FAILED
    if args.this_host:
        host = f"@{socket.gethostname()}"
        replies = {name: queues for name, queues in replies.items() if name.endswith(host)}
    consuming = sorted(
        name
        for name, queues in replies.items()
        if any(q.get("name") == settings.queue for q in queues)
    )
    refused = _refused_workers(settings, consuming)
    for name, entry in refused.items():
        since = datetime.fromtimestamp(float(entry.get("since", 0)), UTC)
        _error(
            f"{name} dials nothing since {since:%Y-%m-%d %H:%M:%S} UTC: "
            f"{entry.get('detail', 'the platform refused its OAuth client credentials')}"
        )
    working = [name for name in consuming if name not in refused]
    if working:
        swept = _sweeping(settings, working)
        return EXIT_FAILED if refused else swept
    if refused:
        return EXIT_FAILED
    answered = f"{len(replies)} answered but none consumes it" if replies else "none answered"
    _error(
        f"no worker consumes queue '{settings.queue}' ({answered} within "
        f"{args.timeout:g}s{' on this host' if args.this_host else ''})"
    )
    return EXIT_FAILED


def _sweeping(settings: Settings, consuming: list[str]) -> int:
    """Workers that consume must sweep too: without its sweeper, a worker's retries and
    other waits are never published again (its heartbeat is in the status store)."""
    alive = StatusStore.from_settings(settings).sweepers_alive(consuming)
    dead = [name for name, ok in alive.items() if not ok]
    if dead:
        _error(
            f"{', '.join(dead)} consume queue '{settings.queue}' but run no sweeper "
            f"(no heartbeat in the status store for {heartbeat_for(settings.sweep_interval_s):g}s):"
            " restart them, and see their logs for why"
        )
        return EXIT_FAILED
    print(f"ok: {', '.join(consuming)} consume queue '{settings.queue}' and sweep")
    return 0


def _refused_workers(settings: Settings, names: list[str]) -> dict[str, dict[str, Any]]:
    """Which of these workers the platform refuses (their own credentials), from the store."""
    if not names:
        return {}
    try:
        refused = StatusStore.from_settings(settings).refused_workers()
    except redis.RedisError:
        return {}  # the check is about the workers; the store has its own
    return {name: refused[name] for name in names if name in refused}


def cmd_outcomes(args: argparse.Namespace) -> int:
    settings = _settings()
    if args.group:
        stream = outcomes(args.group, args.consumer or _login(), settings=settings)
    elif args.follow:
        stream = follow(settings)
    else:
        stream = iter(recent(settings, args.count))
    printed = 0
    for outcome in stream:
        shown = {k: v for k, v in asdict(outcome).items() if v not in (None, "")}
        print(json.dumps(shown) if args.json else _outcome_line(outcome), flush=True)
        printed += 1
    if not printed and not args.json:  # --json: no lines, as there is no outcome
        print("no outcomes yet: a request's outcome is written when it ends")
    return 0


def _outcome_line(o: Outcome) -> str:
    """One outcome; a `lost` one (no request any more) by its entry id or gap, how many
    entries it stands for, and when it was found."""
    at = datetime.fromtimestamp(o.at, UTC)
    fields = [o.request_id, f"{o.state:<9}", o.contact_id or "-", o.conversation_id or o.code or ""]
    if o.state == "lost":
        fields = [o.entry_id, f"{o.state:<9}", f"{o.count} trimmed", o.code or ""]
    return f"{at:%Y-%m-%d %H:%M:%S}  " + "  ".join(printable(f) for f in fields)


def cmd_schema(_: argparse.Namespace) -> int:
    print(json.dumps(FollowUpRequest.model_json_schema(), indent=2))
    return 0


def cmd_simulator(args: argparse.Namespace) -> int:
    try:
        state = simulator_command.state_from(args)
    except ValueError as exc:
        print(f"followup simulator: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # The server needs aiohttp, an extra (followup[simulator]): imported only here.
    try:
        from followup.simulator.server import serve
    except ImportError as exc:
        _error(
            f"the simulator needs the 'simulator' extra ({exc}): "
            "pip install '.[simulator]' (from the checkout)"
        )
        return EXIT_USAGE
    print(
        f"simulator ({args.dialect}) listening on http://{args.host}:{args.port}",
        file=sys.stderr,
        flush=True,
    )
    serve(state, args.host, args.port)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    # The demo runs the simulator, an extra: say so before anything is started.
    if importlib.util.find_spec("aiohttp") is None:
        _error(
            "the demo runs the simulator, which needs the 'simulator' extra (aiohttp is not "
            "installed): pip install '.[simulator]' (from the checkout)"
        )
        return EXIT_USAGE
    settings = _settings()
    # SIGTERM stops the demo as Ctrl-C does: what it started is stopped on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    # With --json standard output is JSON only: the demo's tables go to standard error.
    shown = contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext()
    try:
        with shown:
            code = run_demo(settings, timeout_s=args.timeout, keep=args.keep)
    except RuntimeError as exc:  # no Redis, none to start: one line, no traceback
        _error(f"{exc}")
        return EXIT_FAILED
    if args.json:
        print(json.dumps({"passed": code == 0}))
    return code


def _positive(text: str) -> int:
    """An argparse type: a whole number of 1 or more (argparse names the option)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def _seconds(text: str) -> float:
    """An argparse type: a number of seconds more than 0 (argparse names the option)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, not {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="followup", description=__doc__)
    parser.add_argument("--version", action="version", version=f"followup {_version()}")
    sub = _Subcommands(parser.add_subparsers(required=True, metavar="COMMAND"))

    p = sub.add_parser("enqueue", help="enqueue a follow-up call (prints its request id)")
    p.add_argument("--contact-id", help="the contact (ticket, case) the call follows up")
    p.add_argument("--user-id", help="the agent who calls from their own line")
    p.add_argument("--phone-number", help="E.164, e.g. +61298765432")
    p.add_argument("--reason", help="why the agent calls back, in a few words")
    p.add_argument(
        "--metadata",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="kept with the request (repeatable)",
    )
    p.add_argument(
        "--idempotency-key", help="the same key again enqueues nothing new (safe to resend)"
    )
    p.add_argument("--not-before", metavar="ISO8601", help="e.g. 2026-11-28T09:30:00+11:00")
    p.add_argument("--not-after", metavar="ISO8601", help="still waiting then: window.missed")
    p.add_argument("--timezone", metavar="IANA", help="the customer's zone, e.g. Australia/Perth")
    p.add_argument("--file", help="enqueue a batch: JSON lines or a JSON array ('-' for stdin)")
    p.add_argument("--queue", help="the queue to publish to (default: FOLLOWUP_QUEUE)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_enqueue)

    p = sub.add_parser("status", help="one request's record and history")
    p.add_argument("request_id", help="the id enqueue printed")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_status)

    p = sub.add_parser(
        "hours", help="may a number be called now (or --at)? the rule, its source, the zones"
    )
    p.add_argument("number", help="E.164, e.g. +61298765432")
    p.add_argument("--at", metavar="ISO8601", help="judge at this time (default: now)")
    p.add_argument("--timezone", metavar="IANA", help="the customer's zone, as a request gives")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_hours)

    p = sub.add_parser("list", help="requests, most recently changed first")
    p.add_argument("--state", choices=[s.value for s in STATES], help="only requests in it")
    p.add_argument("--limit", type=_positive, default=50, help="how many requests to show")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_list)

    for name, fn, text in (
        ("cancel", cmd_cancel, "stop a request that has not been dialled"),
        ("retry", cmd_retry, "dial an unknown or failed request again"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("request_id", help="the id enqueue printed")
        p.add_argument("--by", help="who acts, recorded in the history (default: your login)")
        p.add_argument("--json", action="store_true")
        p.set_defaults(run=fn)

    p = sub.add_parser("stats", help="the fleet at a glance: states, last hour, waits, workers")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--timeout", type=_seconds, default=1.0, help="how long workers may take to answer"
    )
    p.set_defaults(run=cmd_stats)

    p = sub.add_parser(
        "worker-check", help="exit 0 if a worker consumes the queue and answers (a health check)"
    )
    p.add_argument(
        "--timeout", type=_seconds, default=2.0, help="how long workers may take to answer"
    )
    p.add_argument("--this-host", action="store_true", help="only workers on this host count")
    p.set_defaults(run=cmd_worker_check)

    p = sub.add_parser("outcomes", help="the outcome stream: recent ones, or --follow new ones")
    p.add_argument("--follow", action="store_true", help="keep printing new outcomes")
    p.add_argument("--group", help="read as this consumer group (acknowledging each)")
    p.add_argument("--consumer", help="the consumer's name in --group (default: your login)")
    p.add_argument("--count", type=_positive, default=20, help="how many recent ones")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_outcomes)

    p = sub.add_parser("schema", help="print the request's JSON Schema")
    p.set_defaults(run=cmd_schema)

    p = sub.add_parser("simulator", help=simulator_command.HELP)
    simulator_command.add_arguments(p)
    p.set_defaults(run=cmd_simulator)

    p = sub.add_parser("demo", help="run the whole pipeline once against the simulator")
    p.add_argument("--timeout", type=_seconds, default=90.0, help="seconds for each table")
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the demo's records (namespace followup-demo) and logs, and say where",
    )
    p.set_defaults(run=cmd_demo)
    for command in sub.added:  # --json on every command: its output and its errors
        if not any("--json" in a.option_strings for a in command._actions):
            command.add_argument("--json", action="store_true", help="errors as JSON")
        for action in command._actions:
            if "--json" in action.option_strings and not action.help:
                action.help = "print JSON (errors too, on standard error)"
    return parser


class _Subcommands:
    """add_parser with the help as the subcommand's description too; remembers them all."""

    def __init__(self, actions: Any) -> None:
        self._actions = actions
        self.added: list[argparse.ArgumentParser] = []

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        kwargs.setdefault("description", kwargs.get("help"))
        parser: argparse.ArgumentParser = self._actions.add_parser(name, **kwargs)
        self.added.append(parser)
        return parser


def _version() -> str:
    try:
        return importlib.metadata.version("followup")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


if __name__ == "__main__":
    sys.exit(main())
