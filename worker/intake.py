"""What a worker accepts from its queue, checked before Celery acts on a message.

Any service may publish to the queue, so a message is judged before Celery's own handling,
which would run any registered task (celery.map, celery.accumulate ...), follow the
callbacks, chain and chord a body carries, hold an `eta` in memory, drop a message past its
`expires`, and log up to a kilobyte of a body it cannot handle. A message is accepted only
when it is Celery's task protocol 2 for `followup.place_call`, as JSON, with a request id
(`tasks.request.request_id_problem`), nothing to run after it, no kombu type markers, and
no `eta` or `expires` that would keep it from the status store. Anything else is refused:
kept as a `rejected` record under its id (Flower shows it REJECTED), or, when its id is not a
request id, counted as a dead letter (`StatusStore.dead_letter`); a log line either way;
then acknowledged. The worker goes on.

The worker's remote control is narrowed the same way (`RestrictedControl`): what Flower and
`followup stats`/`worker-check` read is answered, a revoke cancels the request in the status
store (or says why it cannot), and every other command (shutdown, pool and consumer changes,
rate and time limits ...) is refused.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

import redis
import structlog
from celery.worker import control
from celery.worker.consumer import Consumer
from celery.worker.consumer.control import Control

from followup.config.broker import UNREADABLE
from followup.config.celery import TASK_NAME
from followup.config.redaction import argument_reprs, mask_text
from followup.tasks.request import request_id_problem
from followup.worker.records import ErrorInfo
from followup.worker.runtime import get_runtime

log = structlog.get_logger(__name__)

MAX_BODY_BYTES = 64 * 1024  # a valid request is under 4 KB as JSON
MAX_HOLD_S = 120.0  # an eta this near is the worker's own hand-back (a countdown <= 60 s)
EMBEDDED = ("callbacks", "errbacks", "chain", "chord")
PAUSE_ON_STORE_ERROR_S = 1.0  # before a refused message goes back, while the store is down


@dataclass(frozen=True)
class Refusal:
    """Why a message is not run. `request_id`: the id to keep a `rejected` record under, or
    None (a dead letter). `unless_recorded`: refused only as a first sight; a message for a
    request the store already holds goes on without the header (`strip`)."""

    code: str
    field: str
    message: str
    request_id: str | None
    excerpt: dict[str, Any]
    unless_recorded: bool = False
    strip: tuple[str, ...] = ()


def screen(
    headers: Any, body: bytes | str | None, content_type: str | None, now: datetime
) -> Refusal | None:
    """Judge one task message (its headers, raw body, content type); None if it may run."""
    if not isinstance(headers, dict):
        return Refusal(
            "message.unreadable", "message", "no headers", None, {"headers": type(headers)}
        )
    task_id = headers.get("id")
    excerpt: dict[str, Any] = {"task": _text(headers.get("task")), "id": _text(task_id)}
    if content_type == UNREADABLE:
        excerpt["excerpt"] = mask_text(str(headers.get("followup_excerpt", "")))
        reason = str(headers.get("followup_unreadable", "unreadable"))
        return Refusal("message.unreadable", "message", reason, None, excerpt)
    problem = request_id_problem(task_id)
    if problem:  # nothing can be recorded under it, nor published, nor sent to the platform
        return Refusal("message.id", "request_id", f"the task id {problem}", None, excerpt)
    assert isinstance(task_id, str)

    def refuse(code: str, where: str, message: str, **more: Any) -> Refusal:
        return Refusal(code, where, message, task_id, excerpt, **more)

    if headers.get("compression"):  # kombu decompresses before anyone looks (zip bombs too)
        return refuse(
            "message.body",
            "compression",
            f"compression {_shown(headers.get('compression'))} is not accepted; send plain JSON",
        )
    if content_type != "application/json":
        return refuse(
            "message.content_type",
            "content_type",
            f"content type {_shown(content_type)} is not accepted; send JSON",
        )
    size = len(body or b"")
    if size > MAX_BODY_BYTES:
        return refuse(
            "message.size", "message", f"the body is {size} bytes; at most {MAX_BODY_BYTES}"
        )
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body or ""
        decoded = json.loads(text)
    except (ValueError, RecursionError, UnicodeDecodeError):
        return refuse("message.body", "message", "the body is not JSON this worker can read")
    if not (isinstance(decoded, list) and len(decoded) == 3):
        return refuse(
            "message.body",
            "message",
            "the body is not Celery's task protocol 2 [args, kwargs, embed]",
        )
    args, kwargs, embed = decoded
    excerpt.update(args=args, kwargs=kwargs)
    if not isinstance(args, list):  # Celery would unpack it (a string "args": a hybrid body)
        return refuse(
            "message.body", "args", "args (the body's first element) must be a list; send []"
        )
    if not isinstance(kwargs, dict) or not set(kwargs) <= {"request"}:
        return refuse(
            "message.body",
            "kwargs",
            'kwargs (the body\'s second element) must be {"request": {...}} (or {} with the '
            "request as the only arg), nothing else",
        )
    if headers.get("task") != TASK_NAME:
        return refuse(
            "message.task",
            "task",
            f"task {excerpt['task']!r} is not run here: this worker runs {TASK_NAME} only",
        )
    if any(_markers(decoded)):
        return refuse(
            "message.body",
            "message",
            'kombu type markers ({"__type__": ..., "__value__": ...}) are not accepted; send '
            "plain JSON values",
        )
    # Celery lays the embed over the task's request context (its id included): only the keys
    # its protocol defines may be there, and those empty.
    unknown = (
        [_text(name) for name in embed if name not in EMBEDDED][:8]
        if isinstance(embed, dict)
        else []
    )
    if unknown:
        return refuse(
            "message.embedded",
            "message",
            f"the embed (the body's third element) holds {', '.join(unknown)}: only "
            f"{', '.join(EMBEDDED)} may be there, each empty",
        )
    extras = [name for name in EMBEDDED if isinstance(embed, dict) and embed.get(name)]
    if not isinstance(embed, dict) or extras:
        return refuse(
            "message.embedded",
            "message",
            f"{', '.join(extras) or 'the embed part'}: nothing is run after a follow-up; "
            "read the outcome stream (followup outcomes) instead",
        )
    return _headers(headers, refuse) or _timing(headers, now, refuse)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _names(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


# The headers Celery's Request and its tracer read, each with the type they unpack it as
# (anything else raises inside Celery: the worker dies and the message goes back). None, or
# absent, is always accepted.
HEADER_TYPES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "lang": ("a string", lambda v: isinstance(v, str)),
    "task": ("a string", lambda v: isinstance(v, str)),
    "shadow": ("a string", lambda v: isinstance(v, str)),
    "root_id": ("a string", lambda v: isinstance(v, str)),
    "parent_id": ("a string", lambda v: isinstance(v, str)),
    "group": ("a string", lambda v: isinstance(v, str)),
    "group_index": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "origin": ("a string", lambda v: isinstance(v, str)),
    "argsrepr": ("a string", lambda v: isinstance(v, str)),
    "kwargsrepr": ("a string", lambda v: isinstance(v, str)),
    "retries": ("an integer >= 0", lambda v: type(v) is int and v >= 0),
    "replaced_task_nesting": ("an integer >= 0", lambda v: type(v) is int and v >= 0),
    "ignore_result": ("true or false", lambda v: isinstance(v, bool)),
    "timelimit": (
        "a list of two numbers or nulls",
        lambda v: (
            isinstance(v, list | tuple)
            and len(v) == 2
            and all(item is None or _is_number(item) for item in v)
        ),
    ),
    "stamped_headers": ("a list of header names", _names),
    "stamps": ("an object", lambda v: isinstance(v, dict)),
}


def _headers(headers: dict[str, Any], refuse: Callable[..., Refusal]) -> Refusal | None:
    """Each header Celery reads has the type it expects; nothing to run after the task in
    the headers either (Celery's tracer reads its request context, headers included)."""
    for name, (expected, valid) in HEADER_TYPES.items():
        value = headers.get(name)
        if value is not None and not valid(value):
            return refuse(
                "message.header",
                name,
                f"the {name} header must be {expected} (or absent), not {type(value).__name__}",
            )
    extras = [name for name in EMBEDDED if headers.get(name)]
    if extras:
        return refuse(
            "message.embedded",
            "message",
            f"{', '.join(extras)} (in the headers): nothing is run after a follow-up; read the "
            "outcome stream (followup outcomes) instead",
        )
    return None


def _timing(
    headers: dict[str, Any], now: datetime, refuse: Callable[..., Refusal]
) -> Refusal | None:
    """eta and expires are Celery's: a far eta would be held in worker memory, and a passed
    expires makes Celery drop the message with no record. The status store decides when a
    request goes (not_before, not_after), so a first sight with either is refused, and a
    message for a recorded request goes on without them."""
    expires, eta = headers.get("expires"), headers.get("eta")
    for name, value in (("expires", expires), ("eta", eta)):
        if value is not None and _when(value) is None:
            return refuse("message.timing", name, f"{name} is not an ISO 8601 time")
    if expires is not None:
        return refuse(
            "message.timing",
            "expires",
            "Celery's expires is not accepted; give the request a not_after",
            unless_recorded=True,
            strip=("expires",),
        )
    when = _when(eta) if eta is not None else None
    if when is not None and (when - now).total_seconds() > MAX_HOLD_S:
        return refuse(
            "message.timing",
            "eta",
            "Celery's eta (countdown) is not accepted; give the request a not_before",
            unless_recorded=True,
            strip=("eta",),
        )
    return None


def _when(value: Any) -> datetime | None:
    """An eta or expires as an aware datetime, or None if it is not one Celery can convert."""
    if isinstance(value, str) and len(value) <= 64:
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):  # a datetime: an AMQP timestamp header
        return None
    parsed = value if value.tzinfo else value.replace(tzinfo=UTC)
    try:  # what Celery converts it to (it drops the message, unrecorded, if it cannot)
        parsed.astimezone(UTC).timestamp()
        parsed.astimezone().timestamp()
    except (ValueError, OverflowError, OSError):
        return None
    return parsed


def _markers(value: Any) -> Iterator[bool]:
    """Yields True for each kombu type marker inside a decoded JSON value (iteratively)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "__type__" in item:
                yield True
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _text(value: Any) -> str:
    """A sender-written value for an error, an excerpt or a log line: masked and bounded."""
    return mask_text(value[:64]) if isinstance(value, str) else f"<{type(value).__name__}>"


def _shown(value: Any) -> str:
    return repr(_text(value))


# --- the consumer -------------------------------------------------------------------------


def refuse_message(message: Any, refusal: Refusal, events: Any = None) -> bool:
    """Keep a refusal (a `rejected` record, or a dead letter) and acknowledge the message.
    Returns False when the message is to go on after all (`unless_recorded`, and the store
    holds its request): its refused headers are then taken out."""
    runtime = get_runtime()
    store, queue = runtime.store, runtime.settings.queue
    error = ErrorInfo(
        code=refusal.code,
        message=f"{refusal.field}: {refusal.message}",
        errors=[{"field": refusal.field, "message": refusal.message}],
    )
    try:
        if refusal.request_id is not None:
            registered = store.record_rejected(
                refusal.request_id, refusal.excerpt, error, queue, source="message"
            )
            if registered.outcome == "created":
                _tell_flower(events, refusal, error.message)  # counted by the store
                log.warning(
                    "message refused",
                    request_id=refusal.request_id,
                    attempt=0,
                    state="rejected",
                    code=refusal.code,
                    reason=error.message,
                )
                message.ack()
                return True
            if refusal.unless_recorded:
                for name in refusal.strip:
                    message.headers[name] = None
                log.info(
                    "message for a recorded request: its header is ignored",
                    request_id=refusal.request_id,
                    ignored=list(refusal.strip),
                )
                return False
        count = store.dead_letter(error.message, refusal.excerpt)
        runtime.metrics.refused.inc()
    except redis.RedisError as exc:
        # Nothing can be kept: the message goes back to the broker, after a pause (the
        # consumer holds no other message meanwhile, and nothing could be recorded anyway).
        log.error(
            "message refused, and the status store is unavailable: requeued",
            code=refusal.code,
            error=type(exc).__name__,
        )
        time.sleep(PAUSE_ON_STORE_ERROR_S)
        message.reject(requeue=True)
        return True
    log.error(
        "message refused: dead letter",
        code=refusal.code,
        reason=error.message,
        dead_letters=count,
        request_id=None,
        attempt=None,
        state=None,
    )
    message.ack()
    return True


def _tell_flower(events: Any, refusal: Refusal, reason: str) -> None:
    """Flower shows the refused task with the masked summary of its arguments (never what its
    sender wrote as argsrepr) and the refusal as its exception. (FAILURE, not REJECTED: in
    Celery's event state a received task never shows REJECTED.)"""
    if events is None or not getattr(events, "enabled", False):
        return
    excerpt = refusal.excerpt
    args, kwargs = argument_reprs(excerpt.get("args") or (), excerpt.get("kwargs") or {})
    try:
        events.send(
            "task-received",
            uuid=refusal.request_id,
            name=excerpt.get("task"),
            args=args,
            kwargs=kwargs,
            root_id=refusal.request_id,
            parent_id=None,
            retries=0,
            eta=None,
            expires=None,
        )
        events.send(
            "task-failed",
            uuid=refusal.request_id,
            exception=f"Refused({reason!r})",
            traceback=None,
        )
    except Exception:  # an event is a courtesy: the record is kept already
        log.warning("could not send the refused task's events", exc_info=True)


class GuardedConsumer(Consumer):  # type: ignore[misc]
    """Celery's consumer, with `screen` before its own handling of every task message."""

    class Blueprint(Consumer.Blueprint):  # type: ignore[misc]
        default_steps: ClassVar[list[str]] = [
            "followup.worker.intake:RestrictedControl"
            if step == "celery.worker.consumer.control:Control"
            else step
            for step in Consumer.Blueprint.default_steps
        ]

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        """kombu could not decompress or decode the body (before `screen` sees it): refused
        like any other message, with no body in the log (Celery's own logs it at CRITICAL)."""
        try:
            headers = message.headers if isinstance(message.headers, dict) else {}
            refusal = undecodable(headers, exc)
            if not refuse_message(message, refusal, self.event_dispatcher):
                message.ack()  # nothing to run: it could not be read
        except MemoryError:
            raise
        except Exception as error:
            unhandled(message, error)

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        handle = super().create_task_handler(*args, **kwargs)

        def screened(message: Any) -> Any:
            try:
                refusal = screen(
                    message.headers, message.body, message.content_type, datetime.now(UTC)
                )
            except Exception:  # a message no rule foresaw: refused, never a dead worker
                log.exception("message screening failed")
                refusal = Refusal("message.unreadable", "message", "unreadable", None, {})
            if refusal is None or not refuse_message(message, refusal, self.event_dispatcher):
                return handle(message)
            return None

        def on_task_received(message: Any) -> Any:
            try:
                return screened(message)
            except MemoryError:
                raise
            except Exception as exc:  # any failure handling a message: never a dead worker
                return unhandled(message, exc)

        return on_task_received


def undecodable(headers: dict[str, Any], error: Exception) -> Refusal:
    """The refusal of a message whose body kombu could not decode: `rejected` under its id
    when that is a request id, else a dead letter."""
    task_id = headers.get("id")
    excerpt = {"task": _text(headers.get("task")), "id": _text(task_id)}
    compression = headers.get("compression")
    field, why = (
        ("compression", f"compression {_shown(compression)} is not accepted; send plain JSON")
        if compression
        else ("message", f"the body cannot be decoded ({type(error).__name__}); send JSON")
    )
    request_id = None if request_id_problem(task_id) else task_id
    return Refusal("message.body", field, why, request_id, excerpt)


def unhandled(message: Any, error: Exception) -> None:
    """A message Celery failed on after the screen let it through: a dead letter (with a
    masked excerpt), acknowledged if it is not yet, and the worker goes on."""
    headers = message.headers if isinstance(message.headers, dict) else {}
    excerpt = {"task": _text(headers.get("task")), "id": _text(headers.get("id"))}
    log.error(
        "message could not be handled: dead letter",
        error=type(error).__name__,
        detail=mask_text(str(error)[:200]),
        request_id=None,
        attempt=None,
        state=None,
    )
    refusal = Refusal(
        "message.unhandled",
        "message",
        f"the worker could not handle this message ({type(error).__name__})",
        None,
        excerpt,
    )
    try:
        if not getattr(message, "acknowledged", False):
            refuse_message(message, refusal)
        else:
            get_runtime().store.dead_letter(f"message: {refusal.message}", excerpt)
    except Exception as exc:  # the store, or the broker's ack: the worker goes on regardless
        log.error("dead letter not kept", error=type(exc).__name__)


# --- remote control -----------------------------------------------------------------------

# Read-only commands: Flower's inspector (stats, active_queues, registered, scheduled, active,
# reserved, revoked, conf), `followup stats` (ping) and `worker-check` (active_queues), their
# aliases, the clock, and enabling events (Flower asks; a worker sends them anyway).
ALLOWED_COMMANDS = frozenset(
    {
        "ping",
        "stats",
        "active_queues",
        "registered",
        "dump_tasks",
        "scheduled",
        "dump_schedule",
        "active",
        "dump_active",
        "reserved",
        "dump_reserved",
        "revoked",
        "dump_revoked",
        "conf",
        "dump_conf",
        "query_task",
        "clock",
        "hello",
        "heartbeat",
        "enable_events",
    }
)


def _refused(name: str) -> Callable[..., dict[str, str]]:
    def refused(state: Any, **_: Any) -> dict[str, str]:
        log.warning("remote control command refused", command=name)
        return {"error": f"{name}: refused by followup (docs/security.md: remote control)"}

    return refused


def revoke(state: Any, task_id: Any = None, **_: Any) -> dict[str, str]:
    """A revoke cancels the request in the status store (recorded in its history), or says
    why it cannot; it is never kept in worker memory (where it would discard the request's
    every message with no record)."""
    ids = task_id if isinstance(task_id, list) else [task_id]
    store, said = get_runtime().store, []
    for request_id in ids[:100]:
        problem = request_id_problem(request_id)
        if problem:
            said.append(f"{_shown(request_id)}: {problem}")
            continue
        ok, now = store.cancel(request_id, f"a remote revoke (to {state.hostname})")
        log.warning("remote revoke", request_id=request_id, cancelled=ok, state=now or None)
        said.append(f"{request_id}: {'cancelled' if ok else now or 'no such request'}")
    return {"ok": "; ".join(said)}


def restricted_handlers() -> dict[str, Callable[..., Any]]:
    handlers: dict[str, Callable[..., Any]] = {
        name: handler if name in ALLOWED_COMMANDS else _refused(name)
        for name, handler in control.Panel.data.items()
    }
    handlers["revoke"] = revoke
    return handlers


class RestrictedControl(Control):  # type: ignore[misc]
    """Celery's remote-control step, answering only ALLOWED_COMMANDS (and revoke)."""

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.box.node.handlers = restricted_handlers()
