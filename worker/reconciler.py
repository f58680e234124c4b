"""The reconciler: asks the platform about `unknown` outcomes instead of a person.

Every worker process runs one (FOLLOWUP_RECONCILE, on by default for a platform that can
say whether a call happened).
Each `unknown` request whose call was sent is looked up at growing intervals: the first
FOLLOWUP_RECONCILE_AFTER_S after it became unknown (the platform's records can lag), then
twice that, four times ..., for FOLLOWUP_RECONCILE_FOR_S; each wait counts from the lookup
before it, so a throttle or an outage delays the schedule rather than using it up. A match
settles it `placed` with its conversation id ("settled by lookup"), unless another request
already holds that id; no match is noted in its history; it is never redialled. A `placed`
request without a call id (a 2xx with no body) is looked up on the same schedule, only to
fill in its id: its state stays `placed`, and it is never redialled either. Lookups take
slots from the fleet's rate limit. A lookup the platform gives no usable answer to (a
429, whose Retry-After is honoured and which lowers the fleet's rate; a 5xx; a timeout; an
odd body) spends no lookup: it goes again later, after_s x 2^failures (capped at
FOLLOWUP_RECONCILE_FOR_S), at most MAX_FAILURES times. A lookup without a token to ask with
(the token endpoint failed) goes again once one may be had, spending nothing. Credentials
without the permission to ask get a 403: logged once, and reconciliation stops in this
process until it restarts.
"""

from __future__ import annotations

import math
import threading
import time

import redis
import structlog

from followup.worker.platforms.base import LookupForbidden, NoAnswer, Platform
from followup.worker.store import Lookup, StatusStore
from followup.worker.tokens import TokenCache, TokenError

log = structlog.get_logger(__name__)

MAX_FAILURES = 20  # lookups without a usable answer, for one request, before they end


class Throttled(Exception):
    """The platform answered a lookup with 429: this pass ends."""


class Reconciler:
    def __init__(
        self,
        store: StatusStore,
        platform: Platform,
        tokens: TokenCache,
        *,
        after_s: float,
        for_s: float,
        lease_s: float,
    ) -> None:
        self.store = store
        self.platform = platform
        self.tokens = tokens
        self.after_s = after_s
        self.for_s = for_s
        self.lease_s = lease_s
        # Lookup n goes after_s x 2^n after the request became unknown: this many fit.
        self.lookups = max(1, math.floor(math.log2(for_s / after_s)) + 1)
        self.forbidden = False

    def reconcile_once(self) -> int:
        """One pass over the lookups that are due; returns how many settled as placed (or,
        placed already, got their call id)."""
        if self.forbidden:
            return 0
        settled = 0
        for lookup in self.store.take_lookups(after_s=self.after_s, lease_s=self.lease_s):
            wait, asked_at = self.store.take_slot()
            if asked_at is None:
                return settled  # the fleet's rate is spoken for; these come back later
            time.sleep(wait)
            try:
                settled += self._look_up(lookup, asked_at)
            except LookupForbidden as exc:
                self.forbidden = True
                log.error(
                    "reconciliation is off until restart: the credentials may not ask the "
                    "platform about calls; grant them the permission",
                    permission=str(exc),
                )
                return settled
            except TokenError:
                return settled  # the token cache has said why; next pass
            except Throttled:
                return settled  # the platform asked us to slow down: the rest wait
        return settled

    def _look_up(self, lookup: Lookup, asked_at: float) -> int:
        request = lookup.request
        number, user = str(request.get("phone_number")), str(request.get("user_id"))
        last = lookup.lookups + 1 >= self.lookups
        try:
            token = self.tokens.get()
        except TokenError as exc:
            # No token to ask with (the cache has said why): like a throttle, this lookup
            # goes again once the token may be had, spending nothing, and the pass ends.
            self.store.lookup_later(lookup.request_id, max(exc.hold_s, self.after_s))
            raise
        except Exception:  # a defect: counted as a lookup without an answer (bounded)
            log.exception("no token for the lookup", request_id=lookup.request_id)
            return self._no_answer(
                lookup, NoAnswer("an unexpected error getting a token"), "", asked_at
            )
        try:
            base = self.platform.api_base(token)
            found = self.platform.find_call(
                base, lookup.request_id, user, number, lookup.sent_at, token
            )
        except NoAnswer as exc:
            return self._no_answer(lookup, exc, token, asked_at)
        except (LookupForbidden, TokenError):
            raise
        except Exception:  # a defect must not stop every other lookup, pass after pass
            log.exception("the lookup failed", request_id=lookup.request_id)
            return self._no_answer(lookup, NoAnswer("an unexpected error"), token, asked_at)
        window = self.platform.match_window_s
        if found and window is not None:
            # A call inside [sent_at, sent_at + window] may be any request's sent within a
            # window of it, before or after.
            others = self.store.sent_between(
                user, number, lookup.sent_at - window, lookup.sent_at + window
            ) - {lookup.request_id}
            if others:
                self.store.reconcile(
                    lookup.request_id,
                    conversation_id=None,
                    detail=f"the platform has call {found}, but another request of the same "
                    f"agent to the same number ({', '.join(sorted(others))}) was sent within "
                    f"{window:g}s of this one: the call may be either's",
                    last=True,
                )
                log.warning(
                    "ambiguous lookup: left unknown for a person",
                    request_id=lookup.request_id,
                    attempt=None,
                )
                return 0
        detail = (
            f"the platform has call {found}: the same agent dialled the same number for this "
            "request"
            if found
            else f"lookup {lookup.lookups + 1} of {self.lookups}: the platform has no such call"
        )
        state = self.store.reconcile(
            lookup.request_id, conversation_id=found, detail=detail, last=last and not found
        )
        log.info(
            "looked up",
            request_id=lookup.request_id,
            attempt=None,
            state=state or None,
            conversation_id=found if state == "placed" else None,
        )
        return 1 if state == "placed" else 0

    def _no_answer(self, lookup: Lookup, exc: NoAnswer, token: str, asked_at: float) -> int:
        """No usable answer: no lookup is spent; the next goes after Retry-After, else after
        a delay that doubles with each failure. A 429 lowers the fleet's rate and ends the
        pass (Throttled)."""
        if exc.reauth:
            self.tokens.invalidate(token)
        backoff = min(self.after_s * 2 ** min(lookup.failures, 16), self.for_s)
        delay = max(exc.retry_after_s or 0.0, backoff)
        self.store.reconcile(
            lookup.request_id,
            conversation_id=None,
            detail=f"no usable answer ({exc}); asked again in {delay:g}s, no lookup spent",
            last=False,
            retry_in_s=delay,
            slow=exc.throttled,
            max_failures=MAX_FAILURES,
            asked_at=asked_at,
        )
        log.warning(
            "the platform gave the lookup no usable answer; it goes again later",
            request_id=lookup.request_id,
            attempt=None,
            reason=str(exc),
            retry_in_s=delay,
        )
        if exc.throttled:
            raise Throttled
        return 0

    def run(self, stop: threading.Event, interval_s: float) -> None:
        while not stop.wait(interval_s):
            try:
                self.reconcile_once()
            except redis.RedisError as exc:
                log.warning("status store unavailable; lookups wait", error=type(exc).__name__)
            except Exception:
                log.exception("reconciliation pass failed; will try again")
