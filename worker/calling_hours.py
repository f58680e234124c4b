"""When a customer may be called: in their own time zone, by their country's rules.

The zone comes from the request's `timezone` (an IANA name), else from the number
(`phonenumbers.timezone`): a number that maps to several zones (an Australian mobile, a US
area code across a zone line) is called only when every one of them allows it; a number
that maps to none uses FOLLOWUP_DEFAULT_TIMEZONE. The hours come from the table below, by
the number's country, else from FOLLOWUP_CALLING_HOURS. All arithmetic is in UTC instants
built from local dates and times with zoneinfo, so daylight-saving changes are exact.

Examples:
    >>> from datetime import datetime, UTC
    >>> rule = rule_for(phonenumbers.parse("+61298765432"), DEFAULT)
    >>> next_opening(datetime(2026, 11, 28, 11, 0, tzinfo=UTC),  # 22:00 Saturday in Sydney
    ...              zones_for(phonenumbers.parse("+61298765432"), None, "UTC"), rule)
    datetime.datetime(2026, 11, 29, 22, 0, tzinfo=datetime.timezone.utc)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import phonenumbers
from phonenumbers import geocoder
from phonenumbers import timezone as number_zones

from followup.config.settings import parse_hours

Window = tuple[time, time]  # local opening and closing time, the same day
HORIZON = timedelta(days=8)  # a rule allows some hours in every week


@dataclass(frozen=True)
class Rule:
    """Calling hours by weekday (Monday first): a local window, or None (no calls)."""

    name: str
    days: tuple[Window | None, ...]
    source: str

    @classmethod
    def every_day(cls, name: str, window: Window, source: str) -> Rule:
        return cls(name, (window,) * 7, source)


hours = parse_hours


# The table (add a country here; keys are ISO 3166 region codes, plus US-FL).
RULES: dict[str, Rule] = {
    "US": Rule.every_day(
        "US", hours("08:00-21:00"), "47 CFR 64.1200(c)(1): 8 am to 9 pm at the called party"
    ),
    "US-FL": Rule.every_day(
        "US-FL", hours("08:00-20:00"), "Florida Telephone Solicitation Act, s. 501.059(8)(a)"
    ),
    "CA": Rule(
        "CA",
        (hours("09:00-21:30"),) * 5 + (hours("10:00-18:00"),) * 2,
        "CRTC Unsolicited Telecommunications Rules: 9:00-21:30 weekdays, 10:00-18:00 weekends",
    ),
    "AU": Rule(
        "AU",
        (hours("09:00-20:00"),) * 5 + (hours("09:00-17:00"), None),
        "Telecommunications (Telemarketing and Research Calls) Industry Standard 2017: "
        "9:00-20:00 weekdays, 9:00-17:00 Saturday, no calls on Sunday",
    ),
    "GB": Rule.every_day(
        "GB",
        hours("08:00-21:00"),
        "no statutory hours; FCA CONC 7.9 guidance calls 9 pm to 8 am unreasonable",
    ),
}
DEFAULT = Rule.every_day("default", hours("08:00-21:00"), "FOLLOWUP_CALLING_HOURS")
ANY_TIME = Rule.every_day("any time", (time(0), time.max), "FOLLOWUP_ENFORCE_CALLING_HOURS=false")


@functools.lru_cache(maxsize=16_384)
def contact_hours(
    phone_number: str, timezone: str | None, default_timezone: str, default: Rule
) -> tuple[Rule, tuple[ZoneInfo, ...]]:
    """The rule and zone(s) for an E.164 number, remembered: they depend on the number alone,
    and working them out (parsing, geocoding) costs more than the rest of the check."""
    number = phonenumbers.parse(phone_number)
    return rule_for(number, default), tuple(zones_for(number, timezone, default_timezone))


def rule_for(number: phonenumbers.PhoneNumber, default: Rule) -> Rule:
    region = phonenumbers.region_code_for_number(number) or ""
    if region == "US" and _in_florida(number):
        return RULES["US-FL"]
    return RULES.get(region, default)


def _in_florida(number: phonenumbers.PhoneNumber) -> bool:
    place = geocoder.description_for_number(number, "en")
    return place == "Florida" or place.endswith(", FL")


def zones_for(
    number: phonenumbers.PhoneNumber, timezone: str | None, default_timezone: str
) -> list[ZoneInfo]:
    """The contact's zone(s): the request's own, else the number's, else the default."""
    if timezone:
        return [ZoneInfo(timezone)]
    names = [z for z in number_zones.time_zones_for_number(number) if z != "Etc/Unknown"]
    return [ZoneInfo(name) for name in (names or [default_timezone])]


def next_opening(
    now: datetime,
    zones: Sequence[ZoneInfo],
    rule: Rule,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> datetime | None:
    """The first instant at or after `now` (and not_before) when every zone's window is open
    and not_after has not passed; None if there is none within the next eight days."""
    start = max(now, not_before) if not_before else now
    allowed = [(start, start + HORIZON)]
    for zone in zones:
        allowed = _intersect(allowed, _windows(zone, rule, start, start + HORIZON))
    if not_after is not None:
        allowed = _intersect(allowed, [(start, not_after)])
    return allowed[0][0] if allowed else None


def _windows(
    zone: ZoneInfo, rule: Rule, start: datetime, end: datetime
) -> list[tuple[datetime, datetime]]:
    """The zone's open windows between start and end, as UTC instants, in order."""
    out = []
    day: date = start.astimezone(zone).date() - timedelta(days=1)
    while day <= end.astimezone(zone).date():
        window = rule.days[day.weekday()]
        if window is not None:
            opens = datetime.combine(day, window[0], tzinfo=zone).astimezone(UTC)
            closes = datetime.combine(day, window[1], tzinfo=zone).astimezone(UTC)
            out.append((opens, closes))
        day += timedelta(days=1)
    return out


def _intersect(
    a: list[tuple[datetime, datetime]], b: list[tuple[datetime, datetime]]
) -> list[tuple[datetime, datetime]]:
    out = []
    for a_start, a_end in a:
        for b_start, b_end in b:
            start, end = max(a_start, b_start), min(a_end, b_end)
            if start < end:
                out.append((start, end))
    return sorted(out)
