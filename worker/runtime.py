"""The objects one process shares (Redis, HTTP pool, token cache), built once from Settings."""

from __future__ import annotations

import threading
from functools import cache, cached_property

import httpx

from followup.config.settings import Settings, get_settings
from followup.worker.api_client import ContactCenterClient
from followup.worker.pipeline import Pipeline
from followup.worker.store import StatusStore
from followup.worker.sweeper import Publish, Sweeper
from followup.worker.tokens import TokenCache


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def store(self) -> StatusStore:
        return StatusStore.from_settings(self.settings)

    @cached_property
    def http(self) -> httpx.Client:
        """One pooled client for all threads: connection reuse, every timeout explicit.

        No transport retries: a create-call POST must never be sent twice by the library.
        """
        s = self.settings
        return httpx.Client(
            timeout=httpx.Timeout(s.http_timeout_s),
            limits=httpx.Limits(
                max_connections=s.worker_concurrency * 2,
                max_keepalive_connections=s.worker_concurrency,
            ),
            transport=httpx.HTTPTransport(retries=0),
            follow_redirects=False,
        )

    @cached_property
    def pipeline(self) -> Pipeline:
        s = self.settings
        client_id, secret = s.require_credentials()
        tokens = TokenCache(
            self.http, s.effective_token_url, client_id, secret, timeout_s=s.http_timeout_s
        )
        return Pipeline(self.store, ContactCenterClient(self.http, s.api_base_url), tokens, s)

    def start_sweeper(self, publish: Publish) -> threading.Event:
        s = self.settings
        sweeper = Sweeper(self.store, publish, lease_s=s.claim_lease_s)
        stop = threading.Event()
        threading.Thread(
            target=sweeper.run,
            args=(stop, s.sweep_interval_s),
            name="followup-sweeper",
            daemon=True,
        ).start()
        return stop

    def close(self) -> None:
        if "http" in self.__dict__:
            self.http.close()
        if "store" in self.__dict__:
            self.store.redis.close()


@cache
def get_runtime() -> Runtime:
    """This process's runtime, built on first use from the environment's settings."""
    return Runtime(get_settings())
