"""A request's own times against a real worker: a person's retry after its window passed, a
not_before far ahead, and dates at the edge of what a datetime can hold."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from followup.cli.local_stack import Worker, wait_until
from followup.config.settings import load_settings
from followup.tasks.producer import FollowUpClient
from followup.tasks.publish import publish
from followup.tasks.request import FollowUpRequest, InvalidRequest
from followup.worker.records import StatusRecord
from tests.conftest import calls_for, followup, foreign_client
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
    later = _missed(own, zone_where_it_is(3))
    own.start_worker()
    for request_id in (daytime, night, later):
        record = own.wait(request_id, "failed")
        assert record.last_error is not None and record.last_error.code == "window.missed"

    assert own.cli("retry", daytime).returncode == 0
    own.wait(daytime, "placed")
    assert len(calls_for(sim, daytime)) == 1

    # Outside calling hours, the retry waits for the customer's morning (a due time, so it
    # is not claimed over and over meanwhile), and says so at once.
    said = own.cli("retry", night, "--json")
    assert said.returncode == 0, said.stderr
    shown = json.loads(said.stdout)
    assert (shown["state"], shown["waits_for"]) == ("retrying", "calling_hours")
    opening = datetime.fromisoformat(shown["next_opening"])
    assert opening > datetime.now(UTC)
    assert shown["calling_hours"]["open"] is False
    record = own.wait(night, "scheduled")
    assert record.waiting_for == "calling_hours"
    assert record.next_attempt_local is not None and record.next_attempt_local.hour == 8
    assert calls_for(sim, night) == []
    assert record.next_attempt_at is not None
    assert abs(record.next_attempt_at.timestamp() - opening.timestamp()) < 120

    # In words: a retry accepted outside calling hours never just says "retrying".
    words = own.cli("retry", later)
    assert words.returncode == 0, words.stderr
    assert "outside the number's calling hours" in words.stdout
    assert "the window next opens at 20" in words.stdout


# --- not_before: the wait bound counts from it; too far ahead is refused ------------------


def test_a_not_before_past_the_wait_bound_is_waited_for_then_called(own: Own, sim: Any) -> None:
    # FOLLOWUP_MAX_WAIT_S is at least 60; the producer's store is given 1 s here (its value
    # is written into the record at enqueue), so that the test takes seconds.
    own.client.store.max_wait_s = 1
    own.start_worker()
    not_before = datetime.now(UTC) + timedelta(seconds=3)
    request_id = own.client.enqueue(
        contact_id="c-later",
        user_id="u-1001",
        phone_number=AUCKLAND,
        timezone=zone_where_it_is(12),
        not_before=not_before.isoformat(),
    )
    assert own.wait(request_id, "scheduled").waiting_for == "not_before"
    own.wait(request_id, "placed", "failed")
    record = own.client.status(request_id)
    assert record is not None and record.state == "placed", record.last_error
    assert calls_for(sim, request_id)[0]["received_at"] >= not_before.timestamp()


def _foreign(own: Own, request: dict[str, Any]) -> str:
    """Straight to the queue, as another service would (send_task)."""
    crm = foreign_client(own.settings["FOLLOWUP_BROKER_URL"])
    try:
        return str(
            crm.send_task(
                "followup.place_call",
                kwargs={"request": request},
                queue=own.settings["FOLLOWUP_QUEUE"],
            ).id
        )
    finally:
        crm.close()


def _fields(record: StatusRecord) -> set[str]:
    assert record.last_error is not None and record.last_error.errors is not None
    return {e["field"] for e in record.last_error.errors}


FAR = {
    "not_before": (datetime.now(UTC) + timedelta(days=400)).isoformat(),
    "extreme not_before": "9999-12-30T00:00:00+00:00",
    "extreme not_after": "9999-12-31T23:59:59-05:00",
    "ancient not_after": "0001-01-01T00:00:00+01:00",
}


@pytest.mark.parametrize("case", FAR)
def test_dates_too_far_ahead_or_out_of_range_are_refused_naming_the_field(
    own: Own, case: str
) -> None:
    field = case.split()[-1]
    request = {
        "contact_id": "c-far",
        "user_id": "u-1001",
        "phone_number": AUCKLAND,
        field: FAR[case],
    }
    with pytest.raises(InvalidRequest) as refused:
        own.client.enqueue(**request)
    assert [e.field for e in refused.value.errors] == [field]

    cli = own.cli(
        "enqueue",
        "--contact-id",
        "c-far",
        "--user-id",
        "u-1001",
        "--phone-number",
        AUCKLAND,
        f"--{field.replace('_', '-')}",
        FAR[case],
    )
    assert cli.returncode == 2 and field in cli.stderr, cli.stderr

    own.start_worker()
    rejected = own.wait(_foreign(own, request), "rejected")
    assert _fields(rejected) == {field}
    good = own.wait(
        _foreign(own, {**request, field: None, "timezone": zone_where_it_is(12)}), "placed"
    )
    assert good.attempts == 1


def test_an_unexpected_error_in_the_worker_is_recorded_as_failed(own: Own, sim: Any) -> None:
    """A stored request the worker cannot handle (written past the validation, as an older
    version could) ends `failed` with the error at once: not a silent lease expiry, over
    and over, until FOLLOWUP_MAX_WAIT_S."""
    request_id = uuid.uuid4().hex
    unchecked = FollowUpRequest.model_construct(
        contact_id="c-overflow",
        user_id="u-1001",
        phone_number=AUCKLAND,
        reason=None,
        metadata={},
        idempotency_key=None,
        not_before=datetime(9999, 12, 30, tzinfo=UTC),
        not_after=None,
        timezone=None,
    )
    own.client.store.register(
        request_id, unchecked, queue=own.client.settings.queue, source="producer"
    )
    publish(
        own.client.app, request_id, unchecked.model_dump(mode="json"), own.client.settings.queue
    )
    own.start_worker()
    record = own.wait(request_id, "failed")
    assert record.last_error is not None and record.last_error.code == "worker.error"
    assert "not_before" in record.last_error.message  # what went wrong, for the fix
    assert [h.event for h in record.history].count("claimed") == 1
    assert calls_for(sim, request_id) == []
