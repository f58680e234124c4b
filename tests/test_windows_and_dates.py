"""A request's own times against a real worker: a person's retry after its window passed, a
not_before far ahead, and dates at the edge of what a datetime can hold."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from followup.cli.local_stack import Worker, wait_until
from followup.config.settings import load_settings
from followup.tasks.producer import FollowUpClient
from followup.worker.records import StatusRecord
from tests.conftest import calls_for, followup
from tests.test_calling_hours import AUCKLAND, zone_where_it_is

pytestmark = pytest.mark.integration


class Own:
    """A namespace and queue of the test's own, with calling hours enforced; the worker is
    started when the test says so."""

    def __init__(self, env: dict[str, str], start: Callable[..., Worker]) -> None:
        suffix = uuid.uuid4().hex[:6]
        self.settings = {
            **env,
            "FOLLOWUP_ENFORCE_CALLING_HOURS": "true",
            "FOLLOWUP_NAMESPACE": f"{env['FOLLOWUP_NAMESPACE']}-own-{suffix}",
            "FOLLOWUP_QUEUE": f"{env['FOLLOWUP_QUEUE']}-own-{suffix}",
        }
        self._start = start
        self.client = FollowUpClient(load_settings(self.settings))

    def start_worker(self) -> Worker:
        return self._start(**self.settings)

    def wait(self, request_id: str, *states: str, timeout_s: float = 20) -> StatusRecord:
        def reached() -> StatusRecord | None:
            record = self.client.status(request_id)
            return record if record is not None and record.state in states else None

        return wait_until(reached, timeout_s, f"{request_id} in {states}", 0.05)

    def cli(self, *args: str) -> Any:
        return followup(*args, env=self.settings)


@pytest.fixture
def own(env: dict[str, str], start_worker: Callable[..., Worker]) -> Iterator[Own]:
    o = Own(env, start_worker)
    yield o
    o.client.close()


def _missed(own: Own, zone: str) -> str:
    """A request whose not_after passed before any worker saw it: failed, window.missed."""
    not_after = datetime.now(UTC) + timedelta(seconds=1)
    request_id = own.client.enqueue(
        contact_id=f"c-{uuid.uuid4().hex[:8]}",
        user_id="u-1001",
        phone_number=AUCKLAND,
        timezone=zone,
        not_after=not_after.isoformat(),
    )
    wait_until(lambda: datetime.now(UTC) > not_after, 10, "the window to pass")
    return request_id


def test_a_retry_after_window_missed_dials_inside_calling_hours(own: Own, sim: Any) -> None:
    daytime, night = _missed(own, zone_where_it_is(12)), _missed(own, zone_where_it_is(3))
    own.start_worker()
    for request_id in (daytime, night):
        record = own.wait(request_id, "failed")
        assert record.last_error is not None and record.last_error.code == "window.missed"

    assert own.cli("retry", daytime).returncode == 0
    own.wait(daytime, "placed")
    assert len(calls_for(sim, daytime)) == 1

    # Outside calling hours, the retry waits for the customer's morning (a due time, so it
    # is not claimed over and over meanwhile), and says so at once.
    assert own.cli("retry", night).returncode == 0
    record = own.wait(night, "scheduled")
    assert record.waiting_for == "calling_hours"
    assert record.next_attempt_local is not None and record.next_attempt_local.hour == 8
    assert calls_for(sim, night) == []
