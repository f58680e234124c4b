"""The status store: every request's state, attempts, outcome and history, in Redis.

The store, not the broker, is the source of truth. Every transition is one Lua script
(`followup.worker.store_lua`), so two deliveries of one message can never both claim a
request, and a request's record, indices and history never disagree.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import redis
from pydantic import ValidationError
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from followup.config.redaction import mask_phone, summarize
from followup.config.settings import Settings, queue_problem
from followup.tasks.request import FollowUpRequest, request_id_problem
from followup.worker import store_lua
from followup.worker.records import (
    STATES,
    UNKNOWN_OUTCOME,
    ErrorInfo,
    HistoryEntry,
    State,
    StatusRecord,
)
from followup.worker.store_lua import LuaScript


@dataclass(frozen=True)
class InlineMessage:
    """A broker message written with its record, when the broker is this Redis: the task
    message for the queue's list and its task-sent event (built by tasks.publish)."""

    queue: str
    message: str
    event_channel: str
    event: str


class UnconfirmedWrite(redis.RedisError):
    """A write the store could not confirm as durable: handled as a store outage. `result`
    is the script's answer on the primary, which holds the write (a replica may not)."""

    def __init__(self, message: str, result: Any = None) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class Registered:
    outcome: Literal["created", "exists", "duplicate", "conflict"]
    request_id: str  # the request that holds the idempotency key, for duplicate and conflict


@dataclass(frozen=True)
class Claim:
    outcome: Literal[
        "claimed", "busy", "done", "early", "missing", "unknown", "requeued", "due", "paused"
    ]
    state: str
    attempts: int
    token: str
    request_json: str  # the stored request, when claimed
    now: float = 0.0  # the status store's clock at the claim (when claimed)
    # The record's not_after (when claimed): the request's own, or None once a person's
    # retry lifted it.
    not_after: datetime | None = None
    asked_free: bool = False  # this attempt's busy check said free before a rate-limit wait
    # Attempts made before a person's retry: they stay counted in `attempts`, and the retry's
    # budget (FOLLOWUP_MAX_ATTEMPTS) counts from here.
    attempts_base: int = 0


# Requests a REGISTER_MANY run records: about 20 ms of Redis time, so that a campaign's
# batch does not hold up every worker's claims behind one long script.
REGISTER_CHUNK = 200
CONFIRM_TIMEOUT_MS = 1000  # the longest a claim or send marker waits for its fsync / replicas


def _at_least(version: str, wanted: tuple[int, int]) -> bool:
    parts = version.split(".")
    try:
        return (int(parts[0]), int(parts[1])) >= wanted
    except (ValueError, IndexError):
        return False


@dataclass(frozen=True)
class Pacing:
    """The fleet's gates as the send-marker script applies them (`store_lua.SEND`)."""

    limit: float = 1e6  # create-call requests a second, fleet-wide (FOLLOWUP_RATE_LIMIT_PER_S)
    burst: int = 1  # FOLLOWUP_RATE_BURST
    spacing: float = 0.0  # between one agent's calls (FOLLOWUP_PER_USER_INTERVAL_S)
    hold: float = 1.0  # a slot this near is waited for in the thread, not in the due set
    lead: float = 0.5  # a request waiting for its slot is due this long before it
    failures: int = 5  # in a row, to open the breaker (FOLLOWUP_BREAKER_FAILURES)
    cooldown: float = 30.0  # FOLLOWUP_BREAKER_COOLDOWN_S
    probe_for: float = 60.0  # how long the breaker's probe may take (the claim's lease)
    number_cap: int = 0  # calls to one number a window, fleet-wide (0: no cap)
    number_window: float = 86400.0  # FOLLOWUP_PER_NUMBER_WINDOW_S

    @classmethod
    def from_settings(cls, settings: Settings) -> Pacing:
        """hold and lead follow the sweep interval: a request waiting for its slot is
        published one sweep ahead of it, and its thread holds the rest."""
        sweep = settings.sweep_interval_s
        return cls(
            limit=settings.rate_limit_per_s,
            burst=settings.rate_burst,
            spacing=settings.per_user_interval_s,
            hold=2 * sweep + 0.5,
            lead=sweep + 0.25,
            failures=settings.breaker_failures,
            cooldown=settings.breaker_cooldown_s,
            probe_for=settings.claim_lease_s,
            number_cap=settings.per_number_max_calls,
            number_window=settings.per_number_window_s,
        )


@dataclass(frozen=True)
class Send:
    """What the send marker's gates said: sent (attempts counts it), hold (seconds in the
    thread, then ask again), wait (the request now waits for `reason` until `at`), lost,
    closed (its calling window closed; `at`: the store's clock; the claim is still held)."""

    outcome: Literal["sent", "hold", "wait", "lost", "closed"]
    attempts: int = 0
    seconds: float = 0.0
    reason: str = ""
    at: float = 0.0


@dataclass(frozen=True)
class Finished:
    """FINISH's answer: recorded?, and what the fleet's gates made of it."""

    recorded: bool
    breaker: str = ""  # 'opened', 'reopened', 'closed' or ''
    rate: float | None = None  # the rate in force, when a 429 lowered it


@dataclass(frozen=True)
class Lookup:
    """An `unknown` request to look up: what it was, when its call was sent, lookups so far."""

    request_id: str
    request: dict[str, Any]
    sent_at: float
    lookups: int
    failures: int = 0  # lookups that got no usable answer (they spend no lookup)


@dataclass(frozen=True)
class DueRequest:
    request_id: str
    state: str
    queue: str
    request: dict[str, Any]
    taken: str = ""  # its due time while the sweeper holds it (TAKE_DUE), as Redis wrote it


def _ts(value: str | float | None) -> datetime | None:
    if value in (None, ""):
        return None
    return datetime.fromtimestamp(float(value), tz=UTC)


MIN_VERSION = (7, 0)  # Lua with cjson, streams, XAUTOCLAIM naming trimmed entries


def connect(url: str, *, timeout_s: float) -> redis.Redis:
    """A Redis client for the status store. No silent command retries: a Lua transition
    that may have run must never be run again blindly; callers decide what an error means.

    redis+sentinel://host:26379,host2:26379/mymaster/0 asks the Sentinels for the primary
    of `mymaster` (again after a failover; the scripts are loaded again on NOSCRIPT)."""
    options: dict[str, Any] = {
        "decode_responses": True,
        "health_check_interval": 30,
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": Retry(NoBackoff(), 0),
    }
    if not url.startswith("redis+sentinel://"):
        return redis.Redis.from_url(url, **options)
    parts = urlsplit(url)
    hosts = [
        (host.rsplit(":", 1)[0], int(host.rsplit(":", 1)[1]) if ":" in host else 26379)
        for host in parts.netloc.rsplit("@", 1)[-1].split(",")
    ]
    service, _, db = parts.path.strip("/").partition("/")
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        hosts,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        sentinel_kwargs={"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s},
    )
    primary = sentinel.master_for(  # type: ignore[no-untyped-call]
        service, db=int(db or 0), password=parts.password, username=parts.username, **options
    )
    return cast(redis.Redis, primary)


class StatusStore:
    def __init__(
        self,
        client: redis.Redis,
        namespace: str,
        *,
        idempotency_ttl_s: int,
        record_ttl_s: int,
        redeliver_after_s: float,
        max_wait_s: float = 3 * 86400,
        pacing: Pacing | None = None,
        outcomes_maxlen: int = 100_000,
        wait_replicas: int = 0,
        timeout_s: float = 5.0,
    ) -> None:
        self.redis = client
        self.ns = namespace
        self.idempotency_ttl_s = idempotency_ttl_s
        self.record_ttl_s = record_ttl_s
        self.redeliver_after_s = redeliver_after_s
        self.max_wait_s = max_wait_s
        self.outcomes_maxlen = outcomes_maxlen
        self.wait_replicas = wait_replicas  # replicas that must hold each claim and marker
        # WAITAOF and WAIT must answer (with a count) before the socket times out (timeout_s).
        self._confirm_ms = int(min(CONFIRM_TIMEOUT_MS, timeout_s * 1000 / 3))
        self.pacing = pacing or Pacing()
        self._policy = json.dumps(dataclasses.asdict(self.pacing))
        self._scripts = {s.name: client.register_script(s.source) for s in store_lua.SCRIPTS}
        self._fsync_markers = False  # see check_durability()

    @classmethod
    def from_settings(cls, settings: Settings) -> StatusStore:
        return cls(
            connect(settings.redis_url, timeout_s=settings.redis_timeout_s),
            settings.namespace,
            idempotency_ttl_s=settings.idempotency_ttl_s,
            record_ttl_s=settings.record_ttl_s,
            redeliver_after_s=settings.redeliver_after_s,
            max_wait_s=settings.max_wait_s,
            pacing=Pacing.from_settings(settings),
            outcomes_maxlen=settings.outcomes_maxlen,
            wait_replicas=settings.redis_wait_replicas,
            timeout_s=settings.redis_timeout_s,
        )

    def _run(self, script: LuaScript, pipe: Any = None, **values: Any) -> Any:
        """Run a transition (or queue it on `pipe`), its arguments by name."""
        args = script.args(
            ns=self.ns,
            ttl=self.record_ttl_s,
            idem_ttl=self.idempotency_ttl_s,
            redeliver_after=self.redeliver_after_s,
            max_wait=self.max_wait_s,
            outcomes_maxlen=self.outcomes_maxlen,
            **values,
        )
        return self._scripts[script.name](args=args, client=pipe)

    # --- writes -------------------------------------------------------------------------

    def register(
        self,
        request_id: str,
        request: FollowUpRequest,
        *,
        queue: str,
        source: str,
        message: InlineMessage | None = None,
    ) -> Registered:
        """Record a valid request as `queued` (idempotency check, record, indices, due time)
        in one step. With `message` (the broker is this Redis), a created request's task
        message and task-sent event go out in the same step."""
        _check_keys([request_id], queue)
        _same_queue(queue, [message])
        fields = _request_fields(request)
        result = self._confirmed(
            store_lua.REGISTER,
            id=request_id,
            **fields,
            state=State.QUEUED,
            queue=queue,
            last_error=None,
            source=source,
            message=message.message if message else None,
            event_channel=message.event_channel if message else None,
            event=message.event if message else None,
        )
        return Registered(outcome=result[0], request_id=result[1])

    def register_many(
        self,
        batch: Sequence[tuple[str, FollowUpRequest, InlineMessage | None]],
        *,
        queue: str,
        source: str,
    ) -> list[Registered]:
        """`register` for a batch of (request id, request, message): REGISTER_CHUNK requests
        a script run, every run in one round trip. Results in the batch's order."""
        messages = [message for _, _, message in batch]
        _check_keys([request_id for request_id, _, _ in batch], queue)
        _same_queue(queue, messages)
        channel = next((m.event_channel for m in messages if m), None)
        pipe = self.redis.pipeline(transaction=False)
        for start in range(0, len(batch), REGISTER_CHUNK):
            each = [
                {
                    "id": request_id,
                    **_request_fields(request),
                    "message": message.message if message else None,
                    "event": message.event if message else None,
                }
                for request_id, request, message in batch[start : start + REGISTER_CHUNK]
            ]
            self._run(
                store_lua.REGISTER_MANY,
                pipe,
                state=State.QUEUED,
                queue=queue,
                source=source,
                event_channel=channel,
                each=each,
            )
        confirming = self._confirm_on(pipe)
        runs = pipe.execute()
        if confirming:
            self._check("register_many", runs[-confirming:], runs)
        flat = [value for run in runs[: len(runs) - confirming] for value in run]
        return [Registered(outcome=outcome, request_id=rid) for outcome, rid in _rows(flat, 2)]

    def record_rejected(
        self, request_id: str, summary: dict[str, Any], error: ErrorInfo, queue: str, source: str
    ) -> Registered:
        """A message that is not a valid request: kept as `rejected`, with its errors and a
        bounded excerpt of the message as a dashboard shows one (ids, a masked number, the
        keys and sizes of the rest: `redaction.summarize`), never the message itself."""
        _check_keys([request_id], queue)
        result = self._confirmed(
            store_lua.REGISTER,
            id=request_id,
            request=excerpt(summary),
            digest="",
            key=None,
            not_before=None,
            not_after=None,
            state=State.REJECTED,
            queue=queue,
            last_error=error.model_dump_json(),
            source=source,
            message=None,
            event_channel=None,
            event=None,
        )
        return Registered(outcome=result[0], request_id=result[1])

    def dead_letter(self, reason: str, message: dict[str, Any]) -> int:
        """A message that cannot be kept as a record (no usable id): a bounded, masked excerpt
        and the reason go to <ns>:dead (the newest DEAD_LETTERS_KEPT), and <ns>:dead:count
        counts them all. Returns the count."""
        entry = json.dumps({"at": time.time(), "reason": reason[:300], "message": excerpt(message)})
        pipe = self.redis.pipeline(transaction=True)
        pipe.lpush(f"{self.ns}:dead", entry)
        pipe.ltrim(f"{self.ns}:dead", 0, DEAD_LETTERS_KEPT - 1)
        pipe.incr(f"{self.ns}:dead:count")
        return int(pipe.execute()[-1])

    def dead_letters(self, limit: int = 100) -> tuple[int, list[dict[str, Any]]]:
        """How many messages were dead-lettered in all, and the newest `limit` of them."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(f"{self.ns}:dead:count")
        pipe.lrange(f"{self.ns}:dead", 0, limit - 1)
        count, entries = pipe.execute()
        return int(count or 0), [json.loads(e) for e in entries]

    def claim(
        self,
        request_id: str,
        *,
        lease_s: float,
        mode: Literal["deliver", "sweep"] = "deliver",
        pauses: Sequence[tuple[str, str]] = (),
        token: str = "",
    ) -> Claim:
        """Atomically move a due request into `dialing`, or say why not. Spends no attempt.

        pauses: (pause name, reason) pairs; while one holds, the request waits instead.
        token: the claim's, if the caller made it (to let the claim go should this raise)."""
        token = token or uuid.uuid4().hex
        outcome, state, attempts, request_json, *claimed = self._confirmed(
            store_lua.CLAIM,
            fsync=False,
            id=request_id,
            token=token,
            lease=lease_s,
            mode=mode,
            unknown_error=UNKNOWN_OUTCOME.model_dump_json(),
            spread=random.uniform(0, 1),
            pauses=json.dumps(list(pauses)),
        )
        return Claim(
            outcome,
            state,
            int(attempts),
            token,
            request_json or "",
            float(claimed[0]) if claimed else 0,
            _ts(claimed[1]) if len(claimed) > 1 else None,
            len(claimed) > 2 and claimed[2] == "1",
            int(claimed[3]) if len(claimed) > 3 else 0,
        )

    def mark_sent(
        self,
        request_id: str,
        token: str,
        *,
        user: str,
        pauses: Sequence[tuple[str, str]] = (),
        closes_at: float | None = None,
        asked_free: bool = False,
    ) -> Send:
        """The fleet's gates (pauses, breaker, agent spacing, rate limit), then the send
        marker, written just before the call leaves; see `Send` for what may come back.
        closes_at: when the request's calling window closes (epoch seconds); at or past it,
        nothing is written and the answer is `closed`, with the store's clock.

        The marker is durable before this returns, in the same round trip: on disk where
        the server can (WAITAOF), and on FOLLOWUP_REDIS_WAIT_REPLICAS replicas (WAIT). A
        marker not confirmed in time raises UnconfirmedWrite: nothing is sent. asked_free:
        the agent's busy check said free for this attempt (kept over a rate-limit wait)."""
        return _send(
            self._confirmed(
                store_lua.SEND,
                fsync=self._fsync_markers,
                id=request_id,
                token=token,
                user=user,
                pauses=json.dumps(list(pauses)),
                policy=self._policy,
                spread=random.uniform(0, 1),
                closes=closes_at,
                asked=asked_free,
            )
        )

    def _confirmed(self, script: LuaScript, *, fsync: bool = False, **values: Any) -> Any:
        """Run a transition and, in the same round trip, wait for its fsync (fsync=True:
        the send marker) and its FOLLOWUP_REDIS_WAIT_REPLICAS replicas. A write that cannot
        be confirmed is an outage (UnconfirmedWrite, with the primary's answer), never a
        guess. Every transition a person or a call depends on goes through here: register,
        claim, send marker, outcome, defer, withdraw, cancel and retry, lookups' answers."""
        if not fsync and not self.wait_replicas:
            return self._run(script, **values)
        pipe = self.redis.pipeline(transaction=False)
        self._run(script, pipe, **values)
        confirming = self._confirm_on(pipe, fsync=fsync)
        result, *confirmations = pipe.execute()
        assert len(confirmations) == confirming
        self._check(script.name, confirmations[-confirming:], result, fsync=fsync)
        return result

    def _confirm_on(self, pipe: Any, *, fsync: bool = False) -> int:
        """Queue the confirmations on `pipe`, after its writes; returns how many replies
        they add. The first is a small write of its own: WAIT and WAITAOF wait for the
        connection's last write, and a transition run again after an outage may write
        nothing (it is already done), yet what the primary holds must be confirmed."""
        if not fsync and not self.wait_replicas:
            return 0
        pipe.set(f"{self.ns}:confirm", 1)
        if fsync:
            pipe.execute_command("WAITAOF", 1, 0, self._confirm_ms)
        if self.wait_replicas:
            pipe.execute_command("WAIT", self.wait_replicas, self._confirm_ms)
        return 1 + int(fsync) + int(bool(self.wait_replicas))

    def _check(
        self, name: str, confirmations: Sequence[Any], result: Any, *, fsync: bool = False
    ) -> None:
        """Raise UnconfirmedWrite if the replies of `_confirm_on` fall short."""
        replies = list(confirmations[1:])  # after the write of its own
        if fsync and int(replies.pop(0)[0]) < 1:
            raise UnconfirmedWrite(f"{name}: not on disk in time; not going on", result)
        if self.wait_replicas and int(replies[0]) < self.wait_replicas:
            raise UnconfirmedWrite(
                f"{name}: {replies[0]} of {self.wait_replicas} replicas "
                "(FOLLOWUP_REDIS_WAIT_REPLICAS) confirmed it in time",
                result,
            )

    def server_version(self) -> tuple[int, ...]:
        """The server's Redis version (Valkey reports the Redis version it is compatible with)."""
        info = cast(dict[str, Any], self.redis.info("server"))
        return tuple(int(x) for x in str(info.get("redis_version", "0")).split(".")[:2])

    def eviction_policy(self) -> str | None:
        """The server's maxmemory-policy, or None where CONFIG is not allowed (some managed
        services). Anything but noeviction may drop idempotency keys and finished records."""
        try:
            config = cast(dict[str, str], self.redis.config_get("maxmemory-policy"))
        except redis.ResponseError:
            return None
        return config.get("maxmemory-policy")

    def check_durability(self) -> str:
        """What a machine crash can cost, read from the server; turns on WAITAOF for send
        markers where it exists (Redis >= 7.2, Valkey) and the AOF is on. Returns a sentence
        for the worker's start-up log."""
        info = cast(dict[str, Any], self.redis.info("server"))
        version = str(info.get("redis_version", "0"))
        try:
            config = cast(dict[str, str], self.redis.config_get("append*"))
        except redis.ResponseError:  # CONFIG is disabled on some managed services
            return (
                f"Redis {version}: CONFIG is not allowed, so durability is unknown; run it "
                "with appendonly yes and appendfsync always (docs/guarantees.md)"
            )
        aof, fsync = config.get("appendonly") == "yes", config.get("appendfsync")
        self._fsync_markers = aof and _at_least(version, (7, 2))
        if self._fsync_markers:
            return f"Redis {version}, AOF on: each send marker waits for its fsync (WAITAOF)"
        if aof and fsync == "always":
            return f"Redis {version}, AOF with appendfsync always: every write is on disk"
        if aof:
            return (
                f"Redis {version}, AOF with appendfsync {fsync}: a machine crash can lose the "
                "last second of send markers, and such a request could be dialled again; use "
                "appendfsync always or Redis >= 7.2"
            )
        return (
            f"Redis {version} without AOF: a Redis restart loses every record and message; "
            "use appendonly yes with appendfsync always"
        )

    def withdraw(
        self, request_id: str, token: str, *, delay_s: float, reason: str, detail: str
    ) -> bool:
        """The call never left, but the send marker was (or may have been) written: take it
        back, refund the attempt, release the claim; the request waits delay_s for `reason`.
        Run it again freely until it is confirmed. False if it is not (or no longer) this
        claim's to take back."""
        return bool(
            self._confirmed(
                store_lua.WITHDRAW,
                id=request_id,
                token=token,
                delay=delay_s,
                reason=reason,
                detail=detail,
            )
        )

    def unsend(self, request_id: str, token: str, detail: str) -> bool:
        """The platform did nothing with the request (a 401): take the marker back and refund
        the attempt. False if the claim was lost."""
        return bool(self._run(store_lua.UNSEND, id=request_id, token=token, detail=detail))

    def finish(
        self,
        request_id: str,
        token: str,
        state: State,
        *,
        event: str,
        detail: str = "",
        conversation_id: str | None = None,
        error: ErrorInfo | None = None,
        retry_in_s: float = 0.0,
        pause_all_s: float = 0.0,
        waiting_for: str = "retry_backoff",
        spent: bool = True,
        slow: bool = False,
        health: Literal["ok", "failure", ""] = "",
    ) -> Finished:
        """Record an attempt's outcome; only the claim's holder may (else not `recorded`).

        pause_all_s > 0 (the API's Retry-After on a 429/503) holds every worker's claims.
        A retry waits for `waiting_for`. spent=False refunds the attempt (the platform did
        nothing with it); slow (a 429) lowers the fleet's rate; health feeds the breaker.
        """
        fields: dict[str, Any] = {
            "last_error": error.model_dump_json() if error else None,
        }
        if conversation_id:
            fields["conversation_id"] = conversation_id
        # With replicas to wait for, the outcome waits too, so that a failover cannot take a
        # `placed` back to a marker and `unknown`; FINISH runs again harmlessly until it is.
        ok, _, breaker, rate = self._confirmed(
            store_lua.FINISH,
            fsync=False,
            id=request_id,
            token=token,
            state=state,
            fields=json.dumps(fields),
            event=event,
            detail=detail,
            due_in=retry_in_s,
            pause=pause_all_s,
            waiting=waiting_for,
            spent=spent,
            slow=slow,
            health=health,
            policy=self._policy,
        )
        return Finished(bool(ok), breaker or "", float(rate) if rate else None)

    def defer(
        self,
        request_id: str,
        token: str,
        *,
        delay_s: float,
        reason: str,
        detail: str,
        error: ErrorInfo | None = None,
        pause: tuple[str, float] | None = None,
        fields: dict[str, str] | None = None,
    ) -> bool:
        """Before sending: the request waits delay_s for `reason`, spending nothing; with
        `pause` (name, seconds), that fleet-wide pause is set too. False if the claim was lost."""
        name, seconds = pause or ("", 0.0)
        return bool(
            self._confirmed(
                store_lua.DEFER,
                id=request_id,
                token=token,
                delay=delay_s,
                reason=reason,
                detail=detail,
                last_error=error.model_dump_json() if error else None,
                pause_name=name,
                pause_s=seconds,
                fields=json.dumps(fields or {}),
            )
        )

    # --- credentials: a refusal is one worker's state ----------------------------------

    def credentials_work(self, name: str, *, for_s: float) -> None:
        """A worker holds a token for the OAuth client `name` (runtime.credentials_pause):
        for for_s, a worker whose own credentials are refused hands its requests on."""
        self.redis.set(f"{self.ns}:granted:{name}", "1", px=max(1, int(for_s * 1000)))

    def credentials_work_elsewhere(self, name: str) -> bool:
        return bool(self.redis.exists(f"{self.ns}:granted:{name}"))

    def worker_refused(self, node: str, *, since: float, for_s: float, detail: str) -> None:
        """The platform refuses this worker's credentials (for `followup worker-check`)."""
        entry = {"since": since, "until": time.time() + for_s, "detail": detail}
        self.redis.hset(f"{self.ns}:refused", node, json.dumps(entry))

    def worker_accepted(self, node: str) -> None:
        self.redis.hdel(f"{self.ns}:refused", node)

    def refused_workers(self) -> dict[str, dict[str, Any]]:
        """Workers whose credentials the platform refuses, by node name (stale ones dropped)."""
        key = f"{self.ns}:refused"
        now, out, stale = time.time(), {}, []
        for node, raw in cast(dict[str, str], self.redis.hgetall(key)).items():
            entry = json.loads(raw)
            if float(entry.get("until", 0)) < now:
                stale.append(node)
            else:
                out[node] = entry
        if stale:
            self.redis.hdel(key, *stale)
        return out

    def lift(self, pause_name: str, reason: str) -> int:
        """End a fleet-wide pause early; what waited for it is due now. Returns how many."""
        return int(self._run(store_lua.LIFT, pause_name=pause_name, reason=reason))

    def cancel(self, request_id: str, who: str) -> tuple[bool, str]:
        return self._manual(request_id, "cancel", who)

    def retry(self, request_id: str, who: str) -> tuple[bool, str]:
        return self._manual(request_id, "retry", who)

    def _manual(self, request_id: str, action: str, who: str) -> tuple[bool, str]:
        ok, state = self._confirmed(
            store_lua.MANUAL, id=self.resolve(request_id), action=action, who=who
        )
        return bool(ok), state

    def sweeper_alive(self, worker: str, for_s: float) -> None:
        """A sweeper's heartbeat: `worker` (its Celery node name) sweeps; kept for_s."""
        self.redis.set(f"{self.ns}:sweeper:{worker}", "1", px=max(int(for_s * 1000), 1))

    def sweepers_alive(self, workers: Sequence[str]) -> dict[str, bool]:
        """Which of these workers' sweepers have a live heartbeat."""
        if not workers:
            return {}
        beats = cast(list[str | None], self.redis.mget([f"{self.ns}:sweeper:{w}" for w in workers]))
        return {w: beat is not None for w, beat in zip(workers, beats, strict=True)}

    def take_due(self, limit: int = 100, *, hold_s: float = 30.0) -> list[DueRequest]:
        """Requests whose due time has passed, each held for hold_s so that no other sweeper
        takes it; say what became of them with `published`, which moves their due times."""
        rows = _rows(self._run(store_lua.TAKE_DUE, limit=limit, hold=hold_s), 5)
        return [
            DueRequest(request_id, state, queue, json.loads(request or "{}"), taken)
            for request_id, state, queue, request, taken in rows
        ]

    def published(self, outcomes: Sequence[tuple[DueRequest, bool]]) -> int:
        """After the sweeper's publishes (request, published?): a published request is
        published again only if no worker claims it within a growing step; one that was
        not is due again now, at no cost. Entries a worker claimed meanwhile are left alone."""
        if not outcomes:
            return 0
        each = [{"id": due.request_id, "taken": due.taken, "published": ok} for due, ok in outcomes]
        return int(self._run(store_lua.PUBLISHED, each=each))

    def take_lookups(self, *, after_s: float, lease_s: float, limit: int = 50) -> list[Lookup]:
        """`unknown` requests due for a lookup at the platform (see store_lua.TAKE_LOOKUPS)."""
        flat = self._run(store_lua.TAKE_LOOKUPS, limit=limit, after=after_s, lease=lease_s)
        return [
            Lookup(request_id, json.loads(request or "{}"), float(sent_at), int(n), int(failed))
            for request_id, request, sent_at, n, failed in _rows(flat, 5)
        ]

    def lookup_later(self, request_id: str, delay_s: float) -> None:
        """Ask about this `unknown` request again delay_s later, spending nothing."""
        self._run(store_lua.LOOKUP_LATER, id=request_id, delay=delay_s)

    def reconcile(
        self,
        request_id: str,
        *,
        conversation_id: str | None,
        detail: str,
        last: bool,
        retry_in_s: float = 0.0,
        slow: bool = False,
        max_failures: int = 20,
        asked_at: float | None = None,
    ) -> str:
        """Settle an `unknown` request by what the platform says; retry_in_s > 0: it gave no
        usable answer, ask again then, spending no lookup (see store_lua.RECONCILE)."""
        return str(
            self._confirmed(
                store_lua.RECONCILE,
                id=request_id,
                conversation_id=conversation_id,
                detail=detail,
                last=last,
                retry_in=retry_in_s,
                slow=slow,
                max_failures=max_failures,
                policy=self._policy,
                asked_at=asked_at,
            )
        )

    def take_slot(self) -> tuple[float, float | None]:
        """A slot of the fleet's rate limit for a question that is not a call (a lookup, a
        busy check): (seconds to wait, the slot on the store's clock) when it is reserved,
        or (more than Pacing.hold, None): nothing reserved, try later."""
        wait, at = self._run(store_lua.TAKE_SLOT, policy=self._policy)
        return float(wait), float(at) if at else None

    def slow_down(self, *, asked_at: float | None = None) -> float:
        """A question was answered 429: lower the fleet's rate, once a round trip (not for a
        question asked before the last cut: asked_at, its slot from take_slot); returns the
        rate in force."""
        return float(self._run(store_lua.SLOW_DOWN, policy=self._policy, asked_at=asked_at))

    # --- reads --------------------------------------------------------------------------

    def sent(self, request_id: str, token: str) -> bool:
        """Whether this claim's send marker is set: its call may have left."""
        fields = cast(
            list[Any], self.redis.hmget(f"{self.ns}:req:{request_id}", ["claim", "sent_at"])
        )
        claim, sent_at = fields
        return claim == token and bool(sent_at)

    def resolve(self, request_id: str) -> str:
        """The request an id stands for: its own record first; otherwise a duplicate
        message's id leads to the first request (an alias never shadows a record)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.exists(f"{self.ns}:req:{request_id}")
        pipe.get(f"{self.ns}:alias:{request_id}")
        own, alias = pipe.execute()
        return str(alias) if alias and not own else request_id

    def get(self, request_id: str, *, history: bool = True) -> StatusRecord | None:
        records = self._load([self.resolve(request_id)], history=history)
        return records[0] if records else None

    def calls_to(self, phone_number: str) -> list[datetime]:
        """When the calls to an E.164 number that count against the per-number cap were
        sent, oldest first (the send marker's script keeps them: store_lua.SEND)."""
        digest = hashlib.sha1(phone_number.encode(), usedforsecurity=False).hexdigest()
        now = cast(tuple[int, int], self.redis.time())
        since = now[0] + now[1] / 1e6 - self.pacing.number_window
        sent = cast(
            list[tuple[str, float]],
            self.redis.zrangebyscore(f"{self.ns}:number:{digest}", since, "+inf", withscores=True),
        )
        return [datetime.fromtimestamp(at, UTC) for _, at in sent]

    def sent_between(self, user_id: str, phone_number: str, since: float, until: float) -> set[str]:
        """The requests of this agent to this number whose send marker was set between
        since and until (epoch seconds; the send marker's script keeps them for a day)."""
        digest = hashlib.sha1(
            f"{user_id} {phone_number}".encode(), usedforsecurity=False
        ).hexdigest()
        members = cast(
            list[str], self.redis.zrangebyscore(f"{self.ns}:sends:{digest}", since, until)
        )
        return {member.rsplit(":", 1)[0] for member in members}

    def request_of(self, request_id: str) -> FollowUpRequest | None:
        """The request as enqueued (its number in the clear: for working out its calling
        hours, never for display), or None (also for a `rejected` message, whose record
        keeps an excerpt, not a request)."""
        raw = cast(
            str | None, self.redis.hget(f"{self.ns}:req:{self.resolve(request_id)}", "request")
        )
        try:
            return FollowUpRequest.model_validate_json(raw) if raw else None
        except ValidationError:
            return None

    def list_requests(self, state: State | None = None, limit: int = 50) -> list[StatusRecord]:
        """Most recently changed first (or newest first without a state)."""
        index = f"{self.ns}:state:{state}" if state else f"{self.ns}:all"
        ids = [str(i) for i in cast(list[str], self.redis.zrevrange(index, 0, max(limit, 1) - 1))]
        records = self._load(ids, history=False)
        found = {r.request_id for r in records}
        gone = [i for i in ids if i not in found]
        if gone:  # records past their retention: drop them from the index
            self.redis.zrem(index, *gone)
        return records

    def counts(self) -> dict[str, int]:
        pipe = self.redis.pipeline(transaction=False)
        for state in STATES:
            pipe.zcard(f"{self.ns}:state:{state}")
        return dict(zip(STATES, (int(n) for n in pipe.execute()), strict=True))

    def _load(self, ids: list[str], *, history: bool) -> list[StatusRecord]:
        pipe = self.redis.pipeline(transaction=False)
        for request_id in ids:
            pipe.hgetall(f"{self.ns}:req:{request_id}")
            if history:
                pipe.lrange(f"{self.ns}:hist:{request_id}", 0, -1)
        raw = pipe.execute()
        step = 2 if history else 1
        out = []
        for n, request_id in enumerate(ids):
            fields = raw[n * step]
            if not fields:
                continue
            entries = raw[n * step + 1] if history else []
            out.append(_to_record(request_id, fields, entries))
        return out


def _to_record(request_id: str, f: dict[str, str], history: list[str]) -> StatusRecord:
    try:
        request = json.loads(f.get("request") or "{}")
    except ValueError:
        request = {}
    phone = request.get("phone_number")
    last_error = f.get("last_error")
    return StatusRecord(
        request_id=request_id,
        state=f["state"],
        attempts=int(f.get("attempts") or 0),
        contact_id=_str_or_none(request.get("contact_id")),
        user_id=_str_or_none(request.get("user_id")),
        phone_number=mask_phone(phone) if isinstance(phone, str) else None,
        idempotency_key=f.get("idempotency_key") or None,
        queue=f.get("queue") or None,
        conversation_id=f.get("conversation_id") or None,
        last_error=ErrorInfo.model_validate_json(last_error) if last_error else None,
        next_attempt_at=_ts(f.get("next_attempt_at")),
        waiting_for=f.get("waiting_for") or None,
        customer_timezone=f.get("customer_timezone") or None,
        created_at=_ts(f.get("created_at")),
        updated_at=_ts(f.get("updated_at")),
        history=[HistoryEntry.model_validate(json.loads(entry)) for entry in history],
    )


def _send(raw: list[Any]) -> Send:
    outcome = raw[0]
    if outcome == "sent":
        return Send("sent", attempts=int(raw[1]))
    if outcome == "hold":
        return Send("hold", seconds=float(raw[1]))
    if outcome == "wait":
        return Send("wait", reason=str(raw[1]), at=float(raw[2]))
    if outcome == "closed":
        return Send("closed", at=float(raw[1]))
    return Send("lost")


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


EXCERPT_MAX_CHARS = 2048
DEAD_LETTERS_KEPT = 1000


def excerpt(message: Any) -> str:
    """What is kept of a message that is not a request: `summarize`d, as JSON, bounded."""
    text = json.dumps(summarize(message), default=str)
    if len(text) <= EXCERPT_MAX_CHARS:
        return text
    return json.dumps({"excerpt": text[: EXCERPT_MAX_CHARS - 100], "truncated_from": len(text)})


def _request_fields(request: FollowUpRequest) -> dict[str, Any]:
    """What REGISTER stores of a valid request: its canonical JSON and digest, its key."""
    request_json = request.canonical_json()
    return {
        "request": request_json,
        "digest": request.digest(request_json),
        "key": request.idempotency_key,
        "not_before": request.not_before.timestamp() if request.not_before else None,
        "not_after": request.not_after.timestamp() if request.not_after else None,
    }


def _check_keys(request_ids: Sequence[str], queue: str) -> None:
    """Only a request id keys a record, and only a follow-up queue is written to: ValueError
    otherwise (every path that creates a record comes through here)."""
    for request_id in request_ids:
        problem = request_id_problem(request_id)
        if problem:
            raise ValueError(f"request id {request_id!r:.80}: {problem}")
    problem = queue_problem(queue)
    if problem:
        raise ValueError(f"queue {queue!r:.80}: {problem}")


def _same_queue(queue: str, messages: Sequence[InlineMessage | None]) -> None:
    for message in messages:
        if message is not None and message.queue != queue:
            raise ValueError(f"a message for queue {message.queue!r}, its request for {queue!r}")


def _rows(flat: Sequence[Any], width: int) -> list[Sequence[Any]]:
    """A script's flat reply, {a1, b1, a2, b2, ...}, as rows of `width`."""
    return [flat[i : i + width] for i in range(0, len(flat), width)]
