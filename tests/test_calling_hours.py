"""Calling windows: dial only when the customer may be called, in the customer's own zone.

Unit tests of the arithmetic with fixed clocks, then a real worker: a night-time number
waits for its morning, a daytime one goes at once, and not_before / not_after hold."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from datetime import time as dt_time
from typing import Any
from zoneinfo import ZoneInfo

import holidays
import phonenumbers
import pytest

from followup.cli.local_stack import Worker, wait_until
from followup.config.settings import load_settings
from followup.tasks.producer import FollowUpClient
from followup.tasks.request import InvalidRequest
from followup.worker.calling_hours import DEFAULT, RULES, next_opening, rule_for, zones_for
from tests.conftest import calls_for, followup

SYDNEY, LOS_ANGELES, TORONTO = "+61298765432", "+12135550100", "+14165550100"
AUCKLAND = "+6493001234"  # New Zealand: no country rule in the table


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def opening(number: str, now: str, **kwargs: Any) -> datetime | None:
    parsed = phonenumbers.parse(number)
    zones = zones_for(parsed, kwargs.pop("timezone", None), "UTC")
    return next_opening(at(now), zones, rule_for(parsed, DEFAULT), **kwargs)


def test_a_los_angeles_number_at_23_00_waits_for_08_00_local() -> None:
    assert opening(LOS_ANGELES, "2026-07-01T23:00-07:00") == at("2026-07-02T08:00-07:00")
    assert opening(LOS_ANGELES, "2026-07-01T12:00-07:00") == at("2026-07-01T12:00-07:00")


def test_us_daylight_saving_changes_are_exact() -> None:
    # 8 March 2026: New York springs forward at 02:00; 08:00 that morning is EDT (-04:00).
    new_york = "+12125550100"
    assert opening(new_york, "2026-03-08T01:30-05:00") == at("2026-03-08T08:00-04:00")
    # 1 November 2026: back to EST; 08:00 is -05:00.
    assert opening(new_york, "2026-11-01T01:30-04:00") == at("2026-11-01T08:00-05:00")


def test_australian_daylight_saving_and_no_sunday_calls() -> None:
    # Sydney starts daylight saving on Sunday 4 October 2026 (AEST +10 -> AEDT +11).
    friday_night = "2026-10-02T21:00+10:00"
    assert opening(SYDNEY, friday_night) == at("2026-10-03T09:00+10:00")  # Saturday 9:00
    saturday_evening = "2026-10-03T17:30+10:00"  # after Saturday's 17:00, and no Sunday
    # Monday 5 October is Labour Day in New South Wales: Tuesday, AEDT.
    assert opening(SYDNEY, saturday_evening) == at("2026-10-06T09:00+11:00")


def test_weekday_and_weekend_hours_differ_in_canada() -> None:
    assert opening(TORONTO, "2026-07-04T09:30-04:00") == at("2026-07-04T10:00-04:00")  # Sat
    assert opening(TORONTO, "2026-07-06T09:30-04:00") == at("2026-07-06T09:30-04:00")  # Mon
    assert opening(TORONTO, "2026-07-06T21:45-04:00") == at("2026-07-07T09:00-04:00")


def test_florida_is_stricter_than_the_rest_of_the_us() -> None:
    miami = phonenumbers.parse("+13055550100")
    assert rule_for(miami, DEFAULT) is RULES["US-FL"]
    assert opening("+13055550100", "2026-07-01T20:30-04:00") == at("2026-07-02T08:00-04:00")
    assert opening("+12125550100", "2026-07-01T20:30-04:00") == at("2026-07-01T20:30-04:00")


def test_a_number_in_several_zones_is_called_only_when_all_allow() -> None:
    # An Alaskan number of an exchange phonenumbers does not know spans every zone of the
    # exchanges it knows in 907: America/Anchorage and America/Adak (an hour apart), and more.
    alaska = phonenumbers.parse("+19075550100")
    assert {z.key for z in zones_for(alaska, None, "UTC")} >= {
        "America/Anchorage",
        "America/Adak",
    }
    # 08:30 in Anchorage is 07:30 on Adak and 06:30 in Honolulu (phonenumbers puts 907-581
    # there): wait for the latest 08:00, Honolulu's (10:00 in Anchorage).
    assert opening("+19075550100", "2026-07-01T08:30-08:00") == at("2026-07-01T08:00-10:00")
    # An Australian mobile spans the country (Perth, Sydney, Lord Howe, Christmas Island...):
    # 09:00 in Sydney is 06:00 in Perth.
    mobile = "+61412345678"
    first = opening(mobile, "2026-07-06T09:00+10:00")  # a Monday
    assert first is not None
    assert first.astimezone(ZoneInfo("Australia/Perth")).hour >= 9
    assert first.astimezone(ZoneInfo("Australia/Sydney")).hour < 20


def test_a_number_with_no_zone_uses_the_default() -> None:
    freephone = phonenumbers.parse("+80012345678")
    assert [z.key for z in zones_for(freephone, None, "Europe/London")] == ["Europe/London"]
    assert [z.key for z in zones_for(freephone, "Asia/Tokyo", "UTC")] == ["Asia/Tokyo"]


def test_not_before_after_the_windows_end_goes_to_the_next_day() -> None:
    not_before = at("2026-07-01T22:00-07:00")  # after the 21:00 close
    assert opening(LOS_ANGELES, "2026-07-01T10:00-07:00", not_before=not_before) == at(
        "2026-07-02T08:00-07:00"
    )
    closed_until_too_late = at("2026-07-01T23:30-07:00")
    assert (
        opening(
            LOS_ANGELES,
            "2026-07-01T22:00-07:00",
            not_after=closed_until_too_late,
        )
        is None
    )


def test_a_not_after_already_past_is_refused_at_enqueue(client: FollowUpClient) -> None:
    past = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    with pytest.raises(InvalidRequest) as refused:
        client.enqueue(contact_id="c-1", user_id="u-1001", phone_number=SYDNEY, not_after=past)
    assert refused.value.errors[0].field == "not_after"

    def enqueue_cli(*window: str) -> subprocess.CompletedProcess[str]:
        request = ("--contact-id", "c-1", "--user-id", "u-1001", "--phone-number", SYDNEY)
        return followup("enqueue", *request, *window)

    cli = enqueue_cli("--not-after", past)
    assert cli.returncode == 2 and "not_after" in cli.stderr
    zone = enqueue_cli("--timezone", "Mars/Olympus_Mons")
    assert zone.returncode == 2 and "timezone" in zone.stderr and "IANA" in zone.stderr


# --- with a real worker -----------------------------------------------------------------


def zone_where_it_is(hour: int) -> str:
    """A fixed-offset zone (Etc/GMT±N) where the local time now is `hour` o'clock."""
    offset = (hour - datetime.now(UTC).hour + 12) % 24 - 12  # -12..11
    return f"Etc/GMT{-offset:+d}" if offset else "Etc/GMT"


@pytest.fixture
def windows(
    env: dict[str, str], start_worker: Callable[..., Worker]
) -> Iterator[tuple[FollowUpClient, dict[str, str]]]:
    """A worker that enforces calling hours, in a namespace of its own."""
    suffix = uuid.uuid4().hex[:6]
    settings = {
        **env,
        "FOLLOWUP_ENFORCE_CALLING_HOURS": "true",
        "FOLLOWUP_NAMESPACE": f"{env['FOLLOWUP_NAMESPACE']}-hours-{suffix}",
        "FOLLOWUP_QUEUE": f"{env['FOLLOWUP_QUEUE']}-hours-{suffix}",
    }
    start_worker(**settings)
    client = FollowUpClient(load_settings(settings))
    yield client, settings
    client.close()


def _wait(client: FollowUpClient, request_id: str, *states: str, timeout_s: float = 20) -> Any:
    return wait_until(
        lambda: (r := client.status(request_id)) and r.state in states and r,
        timeout_s,
        f"{request_id} in {states}",
        0.05,
    )


def test_a_night_time_number_waits_for_its_morning_and_a_daytime_one_goes_now(
    windows: tuple[FollowUpClient, dict[str, str]], sim: Any
) -> None:
    client, settings = windows
    night = client.enqueue(
        contact_id="c-night",
        user_id="u-1001",
        phone_number=AUCKLAND,
        timezone=zone_where_it_is(3),
    )
    day = client.enqueue(
        contact_id="c-day",
        user_id="u-1002",
        phone_number=AUCKLAND,
        timezone=zone_where_it_is(12),
    )
    _wait(client, day, "placed")
    record = _wait(client, night, "scheduled")
    assert record.waiting_for == "calling_hours"
    assert record.next_attempt_local.hour == 8  # the default 08:00-21:00, in its zone
    assert record.next_attempt_local.minute == 0
    assert calls_for(sim, night) == []
    shown = json.loads(followup("status", night, "--json", env=settings, check=True).stdout)
    assert shown["waiting_for"] == "calling_hours"
    assert shown["next_attempt_at"] and shown["next_attempt_local"]
    assert "the customer's time" in followup("status", night, env=settings, check=True).stdout


def test_a_window_opening_in_a_few_seconds_is_waited_for_then_called_once(
    env: dict[str, str], start_worker: Callable[..., Worker], sim: Any
) -> None:
    zone = zone_where_it_is(12)
    suffix = uuid.uuid4().hex[:6]
    # The window opens a few seconds after the worker is ready: the hours are a setting, so
    # they are fixed before it starts; a worker that took too long to start (a loaded
    # machine) is stopped and another started with a wider margin, so nothing here depends
    # on how fast a worker starts.
    for margin_s in (4, 8, 16, 32, 64):
        opens = (datetime.now(ZoneInfo(zone)) + timedelta(seconds=margin_s)).replace(microsecond=0)
        settings = {
            **env,
            "FOLLOWUP_ENFORCE_CALLING_HOURS": "true",
            "FOLLOWUP_CALLING_HOURS": f"{opens:%H:%M:%S}-{opens + timedelta(hours=1):%H:%M:%S}",
            "FOLLOWUP_NAMESPACE": f"{env['FOLLOWUP_NAMESPACE']}-opens-{suffix}",
            "FOLLOWUP_QUEUE": f"{env['FOLLOWUP_QUEUE']}-opens-{suffix}",
        }
        worker = start_worker(**settings)
        if datetime.now(UTC) < opens - timedelta(seconds=2):
            break
        worker.stop()
    else:
        pytest.fail("no worker started within 62 s of its start")
    client = FollowUpClient(load_settings(settings))
    # No country rule for New Zealand in the table: FOLLOWUP_CALLING_HOURS rules.
    request_id = client.enqueue(
        contact_id="c-opens", user_id="u-1001", phone_number=AUCKLAND, timezone=zone
    )
    assert _wait(client, request_id, "scheduled", timeout_s=120).waiting_for == "calling_hours"
    _wait(client, request_id, "placed", timeout_s=120)
    calls = calls_for(sim, request_id)
    assert len(calls) == 1
    assert calls[0]["received_at"] >= opens.timestamp()
    client.close()


def test_not_before_holds_and_a_passed_not_after_ends_window_missed(
    windows: tuple[FollowUpClient, dict[str, str]], sim: Any
) -> None:
    client, _ = windows
    not_before = datetime.now(UTC) + timedelta(seconds=5)
    later = client.enqueue(
        contact_id="c-later",
        user_id="u-1001",
        phone_number=AUCKLAND,
        timezone=zone_where_it_is(12),
        not_before=not_before.isoformat(),
    )
    missed = client.enqueue(
        contact_id="c-missed",
        user_id="u-1002",
        phone_number=AUCKLAND,
        timezone=zone_where_it_is(3),
        not_after=(datetime.now(UTC) + timedelta(seconds=4)).isoformat(),
    )
    assert _wait(client, later, "scheduled").waiting_for == "not_before"
    _wait(client, later, "placed")
    assert calls_for(sim, later)[0]["received_at"] >= not_before.timestamp()

    record = _wait(client, missed, "failed")
    assert record.last_error is not None
    assert record.last_error.code == "window.missed"
    assert calls_for(sim, missed) == []


def test_a_request_on_a_public_holiday_waits_for_the_next_business_morning(
    env: dict[str, str], start_worker: Callable[..., Worker], sim: Any
) -> None:
    """The clock is the request's own: its not_before falls on the next public holiday in
    New South Wales (from the `holidays` calendar, whatever today is), so the worker judges
    the rule at that instant. It waits for the first business morning after, never dials."""
    sydney = ZoneInfo("Australia/Sydney")
    today = datetime.now(sydney).date()
    calendar = holidays.country_holidays("AU", subdiv="NSW", years=[today.year, today.year + 1])
    day = min(d for d in calendar if d > today + timedelta(days=1) and d.weekday() != 6)
    not_before = datetime.combine(day, dt_time(10), tzinfo=sydney)
    suffix = uuid.uuid4().hex[:6]
    settings = {
        **env,
        "FOLLOWUP_ENFORCE_CALLING_HOURS": "true",
        "FOLLOWUP_MAX_WAIT_S": str(400 * 86400),  # the next holiday may be months away
        "FOLLOWUP_NAMESPACE": f"{env['FOLLOWUP_NAMESPACE']}-holiday-{suffix}",
        "FOLLOWUP_QUEUE": f"{env['FOLLOWUP_QUEUE']}-holiday-{suffix}",
    }
    start_worker(**settings)
    client = FollowUpClient(load_settings(settings))
    request_id = client.enqueue(
        contact_id="c-holiday",
        user_id="u-1001",
        phone_number=SYDNEY,
        not_before=not_before.isoformat(),
    )
    record = _wait(client, request_id, "scheduled", timeout_s=60)
    assert record.waiting_for == "calling_hours"
    assert record.attempts == 0
    opens = record.next_attempt_local
    assert opens is not None and opens.date() > day
    assert (opens.hour, opens.minute) == (9, 0)  # 09:00 on weekdays and Saturdays
    closed_between = [day + timedelta(days=n) for n in range((opens.date() - day).days)]
    assert all(d in calendar or d.weekday() == 6 for d in closed_between)
    assert opens.date() not in calendar and opens.weekday() != 6
    assert calls_for(sim, request_id) == []

    shown = followup("status", request_id, env=settings, check=True).stdout
    assert "AU: Telecommunications" in shown and "Australia/Sydney" in shown
    shown_json = json.loads(followup("status", request_id, "--json", env=settings).stdout)
    assert shown_json["calling_hours"]["rule"] == "AU"
    hours = json.loads(
        followup("hours", SYDNEY, "--at", not_before.isoformat(), "--json", env=settings).stdout
    )
    assert hours["open"] is False and hours["rule"] == "AU" and hours["zones"] == [sydney.key]
    # The due time is the opening, plus the moments the worker took between its claim and
    # the wait (the delay is counted from the claim's clock): never earlier.
    next_opening = datetime.fromisoformat(hours["next_opening"])
    assert next_opening <= record.next_attempt_at < next_opening + timedelta(minutes=1)
    assert hours["holiday"] and hours["source"]
    client.close()
