"""One delivery of a `followup.place_call` message, start to finish, free of Celery.

validate (if the store has not seen it) -> claim -> token -> send marker -> POST ->
classify -> record. Every step's outcome lands in the status store; nothing here raises
for a bad message, so the worker keeps serving.
"""

from __future__ import annotations

import random
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import redis
import structlog

from followup.config.redaction import dialling, mask_text
from followup.config.settings import Settings
from followup.tasks.request import (
    FieldError,
    FollowUpRequest,
    InvalidRequest,
    key_conflict,
    parse_request,
    platform_errors,
    request_id_problem,
)
from followup.worker.api_client import LOST_CLAIM, ContactCenterClient
from followup.worker.backoff import retry_delay
from followup.worker.calling_hours import (
    ANY_TIME,
    Rule,
    contact_hours,
    default_rule,
    next_opening,
    open_until,
)
from followup.worker.classify import Verdict
from followup.worker.metrics import Metrics
from followup.worker.platforms.base import CallRequest, NoAnswer, NotSupported, Platform
from followup.worker.records import ErrorInfo, State
from followup.worker.store import Claim, Finished, Send, StatusStore, UnconfirmedWrite
from followup.worker.tokens import CREDENTIALS_RECHECK_S, TokenCache, TokenError

log = structlog.get_logger(__name__)


@dataclass
class Pipeline:
    store: StatusStore
    client: ContactCenterClient
    tokens: TokenCache
    settings: Settings
    credentials_pause: str  # this OAuth client's fleet-wide pause (runtime.credentials_pause)
    metrics: Metrics = field(default_factory=Metrics)
    availability: Platform | None = None  # asks whether the agent is on a call
    _configuration_logged: bool = False  # a configuration error is logged once a process

    @cached_property
    def calling_rule(self) -> Rule:
        """The hours where the number's country has no rule of its own."""
        return default_rule(self.settings)

    @property
    def _pauses(self) -> list[tuple[str, str]]:
        """The fleet-wide pauses a claim respects, with what a request then waits for."""
        return [("api", "api_pause"), (self.credentials_pause, "credentials")]

    def handle(self, request_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """Process one delivery; returns a short outcome word (shown in Flower).

        A request first seen here is recorded for this worker's own queue
        (FOLLOWUP_QUEUE): a message's routing key is written by its sender, never trusted."""
        queue = self.settings.queue
        problem = request_id_problem(request_id)
        if problem:  # the intake refuses these first (worker.intake); nothing can be keyed
            log.error("message refused: its id is not a request id", problem=problem)
            self.metrics.refused.inc()
            return "refused"
        # Every event about a request carries its id, attempt and state (null until known).
        structlog.contextvars.bind_contextvars(request_id=request_id, attempt=None, state=None)
        claim: Claim | None = None
        try:
            claim = self._claim(request_id)
            if claim.outcome == "missing":  # first sight: another service's send_task
                not_callable = self._first_sight(request_id, args, kwargs, queue)
                if not_callable is not None:
                    return not_callable
                claim = self._claim(request_id)
            return self._attempt(request_id, claim)
        except redis.RedisError:
            raise  # the status store is away: the task hands the message back
        except Exception as exc:  # a fault in this code, never silence and a lease expiry
            return self._unexpected(request_id, claim, exc, args, kwargs, queue)
        finally:
            structlog.contextvars.clear_contextvars()

    def _unexpected(
        self,
        request_id: str,
        claim: Claim | None,
        exc: Exception,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        queue: str,
    ) -> str:
        """An error this code did not expect is recorded at once: the request held ends
        `failed` with the error (`unknown` if its call may have left), for a person to
        retry after the fix; a message never recorded ends `rejected`."""
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        error = f"{type(exc).__name__}: {mask_text(' '.join(str(exc).split()))[:300]}"
        log.error(
            "unexpected error in the worker; recorded",
            error=error,
            where=f"{Path(frame.filename).name}:{frame.lineno}",
        )
        if claim is None or claim.outcome == "missing":
            raw = _request_of(args, kwargs)
            summary = raw if isinstance(raw, dict) else {"args": repr(args)[:200]}
            failure = FieldError(
                field="request", message=f"the worker could not process it: {error}"
            )
            return self._reject(request_id, summary, [failure], queue)
        if claim.outcome != "claimed":
            return "error"
        sent = self.store.sent(request_id, claim.token)
        state = State.UNKNOWN if sent else State.FAILED
        detail = f"the worker failed unexpectedly ({error}); after a fix, followup retry"
        finished = self._record(
            lambda: self.store.finish(
                request_id,
                claim.token,
                state,
                event="worker error",
                detail=detail,
                error=ErrorInfo(code="worker.error", message=detail),
                spent=sent,
            )
        )
        log.warning("transition", state=state, detail=detail, recorded=finished.recorded)
        return str(state)

    def _first_sight(
        self, request_id: str, args: tuple[Any, ...], kwargs: dict[str, Any], queue: str
    ) -> str | None:
        """A message the store has not seen (another service's send_task): validate it.

        Returns the outcome when it is not to be called (rejected, duplicate), else None.
        """
        raw = _request_of(args, kwargs)
        summary = raw if isinstance(raw, dict) else {"args": args, "kwargs": kwargs}
        if raw is _NO_REQUEST:
            return self._reject(request_id, summary, [ENVELOPE_ERROR], queue)
        try:
            request = parse_request(raw)
            request.check_not_before(datetime.now(UTC))
            if problems := platform_errors(request, self.settings.api_dialect):
                raise InvalidRequest(problems)
        except InvalidRequest as exc:
            return self._reject(request_id, summary, exc.errors, queue)
        result = self.store.register(request_id, request, queue=queue, source="message")
        if result.outcome == "duplicate":
            log.info("duplicate ignored", first_request_id=result.request_id)
            return "duplicate"
        if result.outcome == "conflict":
            conflict = key_conflict(request.idempotency_key or "", result.request_id)
            return self._reject(request_id, summary, [conflict], queue)
        log.info("transition", state="queued", attempt=0)
        return None

    def _reject(
        self, request_id: str, summary: dict[str, Any], errors: list[FieldError], queue: str
    ) -> str:
        self.store.record_rejected(
            request_id,
            summary,
            ErrorInfo(
                code="invalid.request",
                message="; ".join(str(e) for e in errors),
                errors=[{"field": e.field, "message": e.message} for e in errors],
            ),
            queue,
            source="message",
        )
        log.warning("transition", state="rejected", attempt=0, errors=[str(e) for e in errors])
        return "rejected"

    def _claim(self, request_id: str) -> Claim:
        """The claim; one the store could not confirm (FOLLOWUP_REDIS_WAIT_REPLICAS), or
        whose answer was lost, is let go at once rather than hold the request `dialing`
        for a whole lease, and the error goes on (the message is handed back)."""
        token = uuid.uuid4().hex
        try:
            return self.store.claim(
                request_id, lease_s=self.settings.claim_lease_s, pauses=self._pauses, token=token
            )
        except redis.RedisError as exc:
            self._let_go(request_id, token, exc)
            raise

    def _let_go(self, request_id: str, token: str, error: redis.RedisError) -> None:
        """Release a claim that may exist, before anything was sent: one the primary holds
        unconfirmed, or (with replicas, where a failover is the likely cause) one whose
        answer was lost, tried for LET_GO_FOR_S; else its lease runs out as after a lost
        worker."""
        if isinstance(error, UnconfirmedWrite):
            if (error.result or [""])[0] != "claimed":
                return  # no claim was made (busy, done, early ...)
        elif not self.store.wait_replicas:
            return  # no failover to ride out: the store is away, and the lease will do
        deadline = time.monotonic() + min(LET_GO_FOR_S, self.settings.claim_lease_s / 2)
        while True:
            try:
                self.store.defer(
                    request_id,
                    token,
                    delay_s=STORE_RECHECK_S + random.uniform(0, 1),
                    reason="status_store",
                    detail=f"the claim was not confirmed ({error}); nothing was sent",
                )
                break
            except UnconfirmedWrite:
                break  # the primary has it: the claim is let go there
            except redis.RedisError:
                if time.monotonic() + 0.5 > deadline:
                    return
                time.sleep(0.5)
        self.metrics.waited("status_store")
        log.warning("claim not confirmed; let go", error=str(error))

    def _attempt(self, request_id: str, claim: Claim) -> str:
        structlog.contextvars.bind_contextvars(attempt=claim.attempts, state=claim.state)
        if claim.outcome != "claimed":
            if claim.outcome == "paused":
                self.metrics.waited("pause")
            log.info("not claimed", outcome=claim.outcome)
            return claim.outcome
        log.debug("transition", state="dialing")  # the outcome's line says the rest
        request = FollowUpRequest.model_validate_json(claim.request_json)
        if request.not_after != claim.not_after:  # lifted by a person's retry
            request = request.model_copy(update={"not_after": claim.not_after})
        with dialling(request.phone_number):  # its number is masked in every form, everywhere
            if problems := platform_errors(request, self.settings.api_dialect):
                return self._cannot_take(request_id, claim, problems)
            if self._outside_its_window(request_id, claim, request):
                return "scheduled"
            return self._dial(request_id, claim, request, self._window_closes(request, claim.now))

    def _cannot_take(self, request_id: str, claim: Claim, problems: list[FieldError]) -> str:
        """A request the configured platform cannot take (enqueued by a producer configured
        for another): rejected, as the producer would have refused it, never sent."""
        error = ErrorInfo(
            code="invalid.request",
            message="; ".join(str(p) for p in problems),
            errors=[{"field": p.field, "message": p.message} for p in problems],
        )
        self._record(
            lambda: self.store.finish(
                request_id,
                claim.token,
                State.REJECTED,
                event="refused",
                detail=error.message,
                error=error,
                spent=False,
            )
        )
        log.warning("transition", state=State.REJECTED, detail=error.message)
        return State.REJECTED

    def _outside_its_window(self, request_id: str, claim: Claim, request: FollowUpRequest) -> bool:
        """Checked before every attempt, on the status store's clock: the customer's calling
        hours and the request's own not_before/not_after. Outside them, the request waits
        (a due time, no attempt spent) for the next opening; with none before not_after, it
        waits for not_after, and is then given up (window.missed) without being dialled."""
        s = self.settings
        if not s.enforce_calling_hours and request.not_before is None and request.not_after is None:
            return False  # nothing to check: any time will do
        now = datetime.fromtimestamp(claim.now, UTC)
        rule, zones = contact_hours(
            request.phone_number, request.timezone, s.default_timezone, self.calling_rule
        )
        rule = rule if s.enforce_calling_hours else ANY_TIME
        opening = next_opening(now, zones, rule, request.not_before, request.not_after)
        if opening is not None and opening <= now:
            return False
        local = now.astimezone(zones[0])
        if opening is None:
            until = request.not_after or now + timedelta(seconds=s.max_wait_s)
            reason, detail = "calling_hours", f"no calling hours open before {until.isoformat()}"
        elif request.not_before is not None and opening == request.not_before:
            until, reason, detail = opening, "not_before", f"not before {opening.isoformat()}"
        else:
            until, reason = opening, "calling_hours"
            detail = (
                f"{local:%a %H:%M} in {zones[0].key} is outside the calling hours "
                f"({rule.name}: {rule.source}); they open {opening.astimezone(zones[0]):%a %H:%M}"
            )
        self.store.defer(
            request_id,
            claim.token,
            delay_s=max(0.0, (until - now).total_seconds()),
            reason=reason,
            detail=detail,
            fields={"customer_timezone": zones[0].key},
        )
        self.metrics.waited(reason)
        log.info("transition", state="scheduled", waiting_for=reason, next_attempt_at=until)
        return True

    def _window_closes(self, request: FollowUpRequest, now: float) -> float | None:
        """When the window open at the claim closes (the calling hours, not_after), for the
        send marker to check again: a token fetch or a wait for a slot can outlast it."""
        s = self.settings
        if not s.enforce_calling_hours and request.not_after is None:
            return None
        rule, zones = contact_hours(
            request.phone_number, request.timezone, s.default_timezone, self.calling_rule
        )
        rule = rule if s.enforce_calling_hours else ANY_TIME
        at = datetime.fromtimestamp(now, UTC)
        closes = open_until(at, zones, rule, request.not_before, request.not_after)
        return closes.timestamp() if closes is not None else now

    def _dial(
        self, request_id: str, claim: Claim, request: FollowUpRequest, closes_at: float | None
    ) -> str:
        call = self.client.prepare(request, request_id)
        attempts, verdict = self._send(request_id, claim, call, request.user_id, closes_at)
        if isinstance(verdict, WindowClosed):
            log.info("its calling window closed before the call could leave; nothing sent")
            if not self._outside_its_window(request_id, replace(claim, now=verdict.at), request):
                self.store.defer(  # open again at once (a window's edge): the next claim goes
                    request_id,
                    claim.token,
                    delay_s=0.0,
                    reason="calling_hours",
                    detail="its calling window closed before the call could leave",
                )
            return "scheduled"
        if isinstance(verdict, Waiting):
            self.metrics.waited(verdict.reason)
            log.info("transition", state="scheduled", waiting_for=verdict.reason)
            return "scheduled"
        if verdict.kind == "lost":
            log.warning("claim lost before sending; nothing sent, its new owner goes on")
            return "lost"
        if (
            verdict.kind == "credentials"
            and verdict.error
            and verdict.error.code == "config.no_tenant"
        ):
            return self._wait_for_configuration(request_id, claim, verdict)
        if verdict.kind == "credentials":
            return self._wait_for_credentials(request_id, claim, verdict)
        structlog.contextvars.bind_contextvars(attempt=attempts)
        asked, waited = verdict.retry_after_asked_s, verdict.retry_after_s
        if asked is not None and waited is not None and asked > waited:
            log.warning(
                "Retry-After past FOLLOWUP_MAX_RETRY_AFTER_S; the cap is used",
                asked_s=asked,
                cap_s=waited,
            )
        outcome = decide(verdict, attempts - claim.attempts_base, self.settings)
        finished = self._record(
            lambda: self.store.finish(
                request_id,
                claim.token,
                outcome.state,
                event=outcome.event,
                detail=outcome.detail,
                conversation_id=verdict.conversation_id,
                error=verdict.error,
                retry_in_s=outcome.retry_in_s,
                pause_all_s=outcome.pause_all_s,
                waiting_for="api_pause" if outcome.pause_all_s else "retry_backoff",
                spent=verdict.spends,
                slow=verdict.status == 429 or verdict.throttled,
                health=verdict.health,
            ),
        )
        self._log_fleet_changes(finished)
        log_method = log.info if outcome.state in (State.PLACED, State.RETRYING) else log.warning
        log_method(
            "transition",
            state=outcome.state,
            detail=outcome.detail,
            recorded=finished.recorded,
            status=verdict.status,
            latency_ms=round(verdict.seconds * 1000) if verdict.seconds is not None else None,
        )
        return outcome.state

    def _log_fleet_changes(self, finished: Finished) -> None:
        s = self.settings
        if finished.rate is not None:
            log.warning(
                "a throttle: the fleet slows down", rate_in_force_per_s=round(finished.rate, 3)
            )
        if finished.breaker == "opened":
            log.error(
                "the platform keeps failing: the breaker opens, dialling pauses fleet-wide",
                failures_in_a_row=s.breaker_failures,
                cooldown_s=s.breaker_cooldown_s,
            )
        elif finished.breaker == "reopened":
            log.error("the breaker's probe failed: it opens again, for longer")
        elif finished.breaker == "closed":
            log.warning("the platform answers again: the breaker closes")

    def _wait_for_configuration(self, request_id: str, claim: Claim, verdict: Verdict) -> str:
        """The token works but the settings cannot use it (e.g. a token that does not say where
        its API is, and no FOLLOWUP_API_BASE_URL): said once, loudly; the request waits (a due time,
        CREDENTIALS_RECHECK_S), nothing spent, never handed round in a loop."""
        assert verdict.error is not None
        if not self._configuration_logged:
            self._configuration_logged = True
            log.error("configuration error: set FOLLOWUP_API_BASE_URL", error=verdict.error.message)
        self.store.defer(
            request_id,
            claim.token,
            delay_s=CREDENTIALS_RECHECK_S + random.uniform(0, 1),
            reason="credentials",
            detail=verdict.error.message,
            error=verdict.error,
        )
        self.metrics.waited("credentials")
        log.warning("transition", state="scheduled", waiting_for="credentials")
        return "scheduled"

    def _wait_for_credentials(self, request_id: str, claim: Claim, verdict: Verdict) -> str:
        """The platform refused this worker's credentials: nothing was sent, nothing is
        spent. While another worker holds a token for the same OAuth client (a half-done
        rotation), the request is handed on to it at once; with none, this OAuth client's
        requests wait (fleet-wide) until a token is granted again."""
        if self.store.credentials_work_elsewhere(self.credentials_pause):
            delay, pause = HAND_ON_S + random.uniform(0, 1), None
            detail = "this worker's OAuth client credentials were refused; handed on to a worker"
        else:
            delay = CREDENTIALS_RECHECK_S + random.uniform(0, 1)
            pause = (self.credentials_pause, CREDENTIALS_RECHECK_S)
            detail = "the platform refused the OAuth client credentials"
        self.store.defer(
            request_id,
            claim.token,
            delay_s=delay,
            reason="credentials",
            detail=detail,
            error=verdict.error,
            pause=pause,
        )
        self.metrics.waited("credentials")
        log.warning("transition", state="scheduled", waiting_for="credentials")
        return "scheduled"

    def _send(
        self,
        request_id: str,
        claim: Claim,
        call: CallRequest,
        user: str,
        closes_at: float | None = None,
    ) -> tuple[int, Verdict | Waiting | WindowClosed]:
        """Token, the fleet's gates and the send marker, POST; a 401 (the platform did
        nothing) takes the marker back and goes once more with a fresh token. Returns
        (attempts spent, the answer), or Waiting when a gate made the request wait.

        A Redis error here, before or at the marker, propagates: nothing was sent, and the
        task hands the message back to the broker.
        """
        attempts, asked_free = claim.attempts, False
        waiting: Waiting | Verdict | None = None
        for first_pass in (True, False):
            platform = self.client.platform
            try:
                token = self.tokens.get()
                base = platform.api_base(token)
                if first_pass:
                    waiting, asked_free = self._ask_if_busy(request_id, claim, user, token, base)
                    token = self.tokens.get()  # the busy check may have had it renewed
                    base = platform.api_base(token)
            except TokenError as exc:
                return attempts, exc.verdict  # nothing was sent
            if waiting is not None:
                return attempts, waiting
            try:
                sent = self._through_the_gates(request_id, claim, user, closes_at, asked_free)
            except redis.RedisError as exc:
                return attempts, self._not_sent(request_id, claim, exc)
            if sent.outcome == "wait":
                return attempts, Waiting(sent.reason, sent.at)
            if sent.outcome == "closed":
                return attempts, WindowClosed(sent.at)
            if sent.outcome != "sent":
                return claim.attempts, LOST_CLAIM
            attempts = sent.attempts
            self.metrics.attempts.inc()
            verdict = self.client.post_call(call, base, token, request_id)
            if verdict.kind != "reauth":
                return attempts, verdict
            self.tokens.invalidate(token)
            if first_pass and not self.store.unsend(
                request_id, claim.token, f"{verdict.summary}; sending again with a new token"
            ):
                return attempts - 1, LOST_CLAIM
        assert verdict.error is not None
        return attempts, Verdict(
            "fail",
            status=verdict.status,
            error=verdict.error.model_copy(
                update={
                    "message": f"{verdict.error.message}: refused twice, with a fresh "
                    "token too; check the OAuth client's grants"
                }
            ),
        )

    def _not_sent(self, request_id: str, claim: Claim, error: redis.RedisError) -> Waiting:
        """The send marker failed (not confirmed by FOLLOWUP_REDIS_WAIT_REPLICAS replicas or
        by its fsync, or the store went away at it): nothing was sent, and this process
        knows it. The marker is taken back and the request waits a little; the take-back is
        written again until it is confirmed (as an outcome is), so no failover can bring
        the marker back and call the request `unknown` without a call."""
        delay = STORE_RECHECK_S + random.uniform(0, 1)
        detail = f"the send marker was not confirmed ({error}); nothing was sent"
        self._record(
            lambda: self.store.withdraw(
                request_id, claim.token, delay_s=delay, reason="status_store", detail=detail
            )
        )
        log.warning("send marker not confirmed; taken back, nothing sent", error=str(error))
        return Waiting("status_store", time.time() + delay)

    def _ask_if_busy(
        self, request_id: str, claim: Claim, user: str, token: str, base: str
    ) -> tuple[Waiting | Verdict | None, bool]:
        """On another call, the agent is not rung: the request waits and asks again after
        FOLLOWUP_AGENT_BUSY_RECHECK_S, spending nothing. The question takes a slot of the
        fleet's rate limit, and is asked once an attempt (a "free" holds over the rate-limit
        wait that may follow). A throttle or an outage means "ask again later" (after its
        Retry-After, else the recheck interval), never "dial"; a platform that cannot say
        (no permission, an answer of another shape) lets the call go.

        Returns (the wait, or LOST_CLAIM, or None to go on; whether it said free)."""
        if self.availability is None or claim.asked_free:
            return None, claim.asked_free
        wait, asked_at = self.store.take_slot()
        if asked_at is None:
            delay = max(wait - self.store.pacing.lead, 0.0)
            detail = f"the fleet-wide rate limit gave the busy check a slot in {wait:.1f}s"
            return self._wait_before_asking(request_id, claim, delay, "rate_limit", detail), False
        time.sleep(wait)
        try:
            busy = self._agent_busy(base, user, token)
        except NoAnswer as exc:
            if exc.throttled:
                rate = self.store.slow_down(asked_at=asked_at)
                log.warning("a throttle: the fleet slows down", rate_in_force_per_s=round(rate, 3))
            delay = exc.retry_after_s or self.settings.agent_busy_recheck_s
            detail = (
                f"the platform could not say whether the agent is free ({exc}); asked again "
                f"in {delay:g}s"
            )
            return self._wait_before_asking(request_id, claim, delay, "availability", detail), False
        if busy is None:
            log.warning("the agent's availability is unknown; dialling anyway")
        if not busy:
            return None, busy is False
        recheck = self.settings.agent_busy_recheck_s
        detail = f"the agent is on another call; asked again in {recheck:g}s"
        return self._wait_before_asking(request_id, claim, recheck, "agent_busy", detail), False

    def _agent_busy(self, base: str, user: str, token: str) -> bool | None:
        """The platform's answer; a 401 (the token was revoked) asks once more with a fresh
        token. Raises NoAnswer, TokenError."""
        assert self.availability is not None
        try:
            try:
                return self.availability.agent_busy(base, user, token)
            except NoAnswer as exc:
                if not exc.reauth:
                    raise
            self.tokens.invalidate(token)
            token = self.tokens.get()
            return self.availability.agent_busy(self.availability.api_base(token), user, token)
        except NotSupported:
            return None

    def _wait_before_asking(
        self, request_id: str, claim: Claim, delay_s: float, reason: str, detail: str
    ) -> Waiting | Verdict:
        if not self.store.defer(
            request_id, claim.token, delay_s=delay_s, reason=reason, detail=detail
        ):
            return LOST_CLAIM
        return Waiting(reason, time.time() + delay_s)

    def _through_the_gates(
        self,
        request_id: str,
        claim: Claim,
        user: str,
        closes_at: float | None,
        asked_free: bool = False,
    ) -> Send:
        """The send marker, after the fleet's gates. A reserved slot that near is waited for
        here (at most Pacing.hold, a few times), so calls leave evenly spaced. Past
        closes_at (the calling window), nothing is sent: `closed`."""
        for _ in range(5):
            sent = self.store.mark_sent(
                request_id,
                claim.token,
                user=user,
                pauses=self._pauses,
                closes_at=closes_at,
                asked_free=asked_free,
            )
            if sent.outcome != "hold":
                return sent
            time.sleep(sent.seconds)
        # Still held after a few waits (many threads contend for the slots): the request
        # waits in the due set, its claim released, instead of holding a thread.
        detail = "many requests contend for the fleet-wide rate limit's slots"
        if not self.store.defer(
            request_id,
            claim.token,
            delay_s=sent.seconds,
            reason="rate_limit",
            detail=detail,
            fields={"asked_free": "1"} if asked_free else None,
        ):
            return Send("lost")
        return Send("wait", reason="rate_limit", at=time.time() + sent.seconds)

    def _record(self, write: Callable[[], T]) -> T:
        """The outcome is known and must land: ride out any Redis error (refused, reset,
        stalled) for up to OUTCOME_WRITE_FOR_S (or half the visibility timeout, if less:
        the message is held meanwhile, and RabbitMQ's consumer_timeout is 30 minutes). The
        claim's token stays valid past its lease, so a write that lands after the sweeper
        called the request `unknown` still settles it with the platform's answer."""
        s = self.settings
        deadline = time.monotonic() + min(OUTCOME_WRITE_FOR_S, s.visibility_timeout_s / 2)
        delay = 0.2
        while True:
            try:
                return write()
            except redis.RedisError as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning(
                    "status store unavailable; retrying the write",
                    retry_in_s=delay,
                    error=type(exc).__name__,
                )
                time.sleep(delay)
                delay = min(delay * 2, 5.0)


OUTCOME_WRITE_FOR_S = 900.0
HAND_ON_S = 0.5  # a request a refused worker hands on waits this long (plus up to 1 s)
LET_GO_FOR_S = 15.0  # a claim's release is tried this long (a Sentinel failover takes seconds)
STORE_RECHECK_S = 2.0  # a request whose claim or marker was not confirmed waits this, and more
T = TypeVar("T")


@dataclass(frozen=True)
class Waiting:
    """A gate made the request wait (nothing was sent): for `reason`, until `at`."""

    reason: str
    at: float


@dataclass(frozen=True)
class WindowClosed:
    """The calling window (or not_after) closed before the call could leave (nothing was
    sent, the claim is still held): `at`, the store's clock then."""

    at: float


@dataclass(frozen=True)
class Outcome:
    """What one attempt's verdict does to the request."""

    state: State
    event: str
    detail: str
    retry_in_s: float = 0.0
    pause_all_s: float = 0.0  # the API's Retry-After speaks to every client: all hold off


def decide(verdict: Verdict, attempts: int, settings: Settings) -> Outcome:
    if verdict.kind == "placed":
        return Outcome(State.PLACED, "placed", verdict.summary)
    if verdict.kind == "unknown":
        return Outcome(State.UNKNOWN, "outcome unknown", verdict.summary)
    if verdict.kind != "retry":
        return Outcome(State.FAILED, "failed", verdict.summary)
    if verdict.spends and attempts >= settings.max_attempts:
        return Outcome(
            State.FAILED,
            "gave up",
            f"all {settings.max_attempts} attempts spent; {verdict.summary}",
        )
    delay = retry_delay(
        attempts,
        base_s=settings.backoff_base_s,
        max_s=settings.backoff_max_s,
        retry_after_s=verdict.retry_after_s,
    )
    return Outcome(
        State.RETRYING,
        "will retry",
        f"{verdict.summary}; next attempt in {delay:.1f}s",
        retry_in_s=delay,
        pause_all_s=verdict.retry_after_s or 0.0,
    )


_NO_REQUEST = object()
ENVELOPE_ERROR = FieldError(
    field="message",
    message="unexpected arguments; send kwargs={'request': {...}} (or one positional argument, "
    "the request object)",
)


def _request_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The request inside a task message's arguments, or _NO_REQUEST."""
    if set(kwargs) == {"request"} and not args:
        return kwargs["request"]
    if len(args) == 1 and not kwargs:
        return args[0]
    return _NO_REQUEST
