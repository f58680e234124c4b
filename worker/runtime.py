"""The objects one process shares (Redis, HTTP pool, token cache), built once from Settings."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
import time
from functools import cache, cached_property

import redis
import structlog

from followup.config.settings import Settings, get_settings
from followup.worker.api_client import ContactCenterClient
from followup.worker.http import PlatformHttp
from followup.worker.metrics import Metrics
from followup.worker.pipeline import Pipeline
from followup.worker.platforms import platform_for
from followup.worker.platforms.base import Platform
from followup.worker.reconciler import Reconciler
from followup.worker.store import StatusStore
from followup.worker.sweeper import Publish, Sweeper
from followup.worker.tokens import CREDENTIALS_RECHECK_S, TokenCache, TokenError

log = structlog.get_logger(__name__)


def credentials_pause(token_url: str, identity: str) -> str:
    """The name of the fleet-wide pause for one set of refused credentials (an OAuth client,
    an access key): workers with other credentials in the same namespace are not held by it."""
    digest = hashlib.sha256(f"{token_url} {identity}".encode()).hexdigest()[:12]
    return f"credentials:{digest}"


# A worker whose credentials work says so this often, for this long (StatusStore.credentials_work):
# a worker whose own credentials are refused then hands its requests on instead of pausing.
BEACON_EVERY_S, BEACON_FOR_S = 30.0, 90.0
RECHECK_THREAD = "followup-credentials-recheck"


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.node = f"{socket.gethostname()}-{os.getpid()}"  # Celery's node name, once ready
        self._refused_since: float | None = None
        self._recheck_pending = threading.Lock()
        self._recheck: threading.Timer | None = None
        self._closed = False

    @cached_property
    def store(self) -> StatusStore:
        return StatusStore.from_settings(self.settings)

    @cached_property
    def metrics(self) -> Metrics:
        return Metrics(self.store)

    @cached_property
    def http(self) -> PlatformHttp:
        s = self.settings
        return PlatformHttp(
            timeout_s=s.http_timeout_s,
            keepalive_s=s.http_keepalive_s,
            max_connections=s.worker_concurrency * 2,
            observe=self.metrics.api_request,
        )

    @cached_property
    def platform(self) -> Platform:
        """The configured platform (FOLLOWUP_API_DIALECT; see `platforms`)."""
        return platform_for(self.settings, self.http)

    @cached_property
    def pipeline(self) -> Pipeline:
        s = self.settings
        grant = self.platform.token_request()
        credentials = credentials_pause(grant.url, grant.identity)
        tokens = TokenCache(
            self.http,
            grant,
            max_retry_after_s=s.max_retry_after_s,
            on_granted=lambda seconds_left: self._credentials_granted(credentials, seconds_left),
            on_fetched=self._token_fetched,
        )
        check_busy = s.check_agent_busy
        if check_busy is None:
            check_busy = self.platform.check_busy_by_default
        return Pipeline(
            self.store,
            ContactCenterClient(self.http, self.platform),
            tokens,
            s,
            credentials_pause=credentials,
            metrics=self.metrics,
            availability=self.platform if check_busy else None,
        )

    def start_reconciler(self) -> threading.Event | None:
        """The reconciler thread (FOLLOWUP_RECONCILE: on by default for a platform that can
        say whether a call happened)."""
        s = self.settings
        if not (self.platform.reconcile_by_default if s.reconcile is None else s.reconcile):
            return None
        reconciler = Reconciler(
            self.store,
            self.platform,
            self.pipeline.tokens,
            after_s=s.reconcile_after_s,
            for_s=s.reconcile_for_s,
            lease_s=max(s.http_timeout_s * 4, 30.0),
        )
        stop = threading.Event()
        threading.Thread(
            target=reconciler.run,
            args=(stop, max(s.sweep_interval_s * 5, 1.0)),
            name="followup-reconciler",
            daemon=True,
        ).start()
        return stop

    def _token_fetched(self, result: str) -> None:
        self.metrics.tokens.labels(result).inc()
        if result == "refused":
            self._credentials_refused()

    def _credentials_refused(self) -> None:
        """The platform refused this worker's credentials: its own state, said in its log
        (the token cache), its metrics and `followup worker-check`, and asked again every
        CREDENTIALS_RECHECK_S; workers whose credentials work go on."""
        self.metrics.credentials_refused.set(1)
        if self._refused_since is None:
            self._refused_since = time.time()
        with contextlib.suppress(redis.RedisError):
            self.store.worker_refused(
                self.node,
                since=self._refused_since,
                for_s=2 * CREDENTIALS_RECHECK_S + 30,
                detail="the platform refused its OAuth client credentials; check "
                "FOLLOWUP_CLIENT_ID and FOLLOWUP_CLIENT_SECRET on it",
            )
        if not self._closed and self._recheck_pending.acquire(blocking=False):
            timer = threading.Timer(CREDENTIALS_RECHECK_S + 0.5, self._recheck_credentials)
            timer.name, timer.daemon = RECHECK_THREAD, True
            self._recheck = timer
            timer.start()

    def _recheck_credentials(self) -> None:
        self._recheck_pending.release()
        if self._closed:
            return
        with contextlib.suppress(TokenError, redis.RedisError):
            self.pipeline.tokens.get()  # a refusal schedules the next check

    def _credentials_granted(self, pause_name: str, seconds_left: float) -> None:
        """A token was granted: this worker dials again, and a credentials pause (this
        OAuth client's) is over."""
        self.metrics.credentials_refused.set(0)
        if self._refused_since is not None:
            self._refused_since = None
            log.warning("the platform accepts this worker's credentials again")
        try:
            self.store.worker_accepted(self.node)
            self.store.credentials_work(pause_name, for_s=BEACON_FOR_S)
            brought_forward = self.store.lift(pause_name, "credentials")
        except redis.RedisError:
            return  # the pause ends on its own; the requests wait that little longer
        if brought_forward:
            log.warning(
                "credentials accepted again; waiting requests go now", count=brought_forward
            )

    def warm_up(self) -> None:
        """At start, in the background: fetch a token (a refusal is logged, and a granted
        token ends a credentials pause) and open a connection, so the first call waits for
        neither."""

        def run() -> None:
            # A failure is logged by the token cache; requests then wait as it says.
            with contextlib.suppress(TokenError, redis.RedisError):
                self.pipeline.tokens.get()

        threading.Thread(target=run, name="followup-warm-up", daemon=True).start()

    def start_credentials_beacon(self) -> threading.Event:
        """Every BEACON_EVERY_S, `say_credentials_work`."""
        stop = threading.Event()

        def run() -> None:
            while not stop.wait(BEACON_EVERY_S):
                self.say_credentials_work()

        threading.Thread(target=run, name="followup-credentials", daemon=True).start()
        return stop

    def say_credentials_work(self) -> None:
        """While this worker's credentials were accepted and not refused since (even with
        its token expired, idle), it says so in the store: a worker whose own credentials are
        refused then hands its requests on, instead of pausing the whole fleet."""
        if self.pipeline.tokens.credentials_accepted:
            with contextlib.suppress(redis.RedisError):
                self.store.credentials_work(self.pipeline.credentials_pause, for_s=BEACON_FOR_S)

    def start_sweeper(self, publish: Publish, worker: str = "") -> threading.Event:
        """The sweeper thread; `worker` (the Celery node name) names its heartbeat."""
        s = self.settings
        sweeper = Sweeper(self.store, publish, lease_s=s.claim_lease_s, worker=worker)
        stop = threading.Event()
        threading.Thread(
            target=sweeper.run,
            args=(stop, s.sweep_interval_s),
            name="followup-sweeper",
            daemon=True,
        ).start()
        return stop

    def close(self) -> None:
        self._closed = True
        if self._recheck is not None:  # a check of refused credentials must not outlive it
            self._recheck.cancel()
            self._recheck.join(5)
        if "http" in self.__dict__:
            self.http.close()
        if "store" in self.__dict__:
            self.store.redis.close()


@cache
def get_runtime() -> Runtime:
    """This process's runtime, built on first use from the environment's settings."""
    return Runtime(get_settings())
