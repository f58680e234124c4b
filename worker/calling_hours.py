"""When a customer may be called: in their own time zone, by their jurisdiction's rules.

The zone comes from the request's `timezone` (an IANA name), else from the number
(`phonenumbers.timezone`, corrected by `calling_rules.ZONE_OVERRIDES`): a number that maps
to several zones (an Australian mobile, a US area code across a zone line) is called only
when every one of them allows it; a number that maps to none uses FOLLOWUP_DEFAULT_TIMEZONE.

The rule comes from `calling_rules.TABLE`: by US state (from the number, through
phonenumbers' geocoder; where it cannot tell one state, the strictest rule of the states
the area code covers), else by country (US territories take the federal rule), else
FOLLOWUP_CALLING_HOURS. A rule may close on public holidays (the `holidays` package):
a state's rule on its state's; a country's rule on the country's plus those of every state
the number may be in (from its area code, and from the request's `timezone`), and where
neither tells a state, on those of every state (the conservative reading: a day off in any
state is a day off).

All arithmetic is in UTC instants built from local dates and times with zoneinfo, so
daylight-saving changes are exact.

Examples:
    >>> from datetime import datetime, UTC
    >>> rule = rule_for(phonenumbers.parse("+61298765432"), DEFAULT, None)
    >>> next_opening(datetime(2026, 11, 28, 11, 0, tzinfo=UTC),  # 22:00 Saturday in Sydney
    ...              zones_for(phonenumbers.parse("+61298765432"), None, "UTC"), rule)
    datetime.datetime(2026, 11, 29, 22, 0, tzinfo=datetime.timezone.utc)
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import holidays
import phonenumbers
from phonenumbers import geocoder
from phonenumbers import timezone as number_zones
from phonenumbers.geodata import GEOCODE_DATA
from phonenumbers.tzdata import TIMEZONE_DATA

from followup.config.settings import Settings, parse_hours
from followup.worker.calling_rules import (
    NUMBER_SUBDIVISIONS,
    RULES,
    TERRITORIES,
    US_STATES,
    ZONE_OVERRIDES,
    ZONE_SUBDIVISIONS,
    Rule,
    Window,
)

__all__ = [
    "ANY_TIME",
    "DEFAULT",
    "RULES",
    "Explanation",
    "Rule",
    "contact_hours",
    "default_rule",
    "explain",
    "next_opening",
    "rule_for",
    "zones_for",
]

HORIZON = timedelta(days=8)  # a rule allows some hours in every week...
HOLIDAY_HORIZON = timedelta(days=16)  # ...and a run of holidays is shorter than a week

DEFAULT = Rule.every_day("default", parse_hours("08:00-21:00"), "FOLLOWUP_CALLING_HOURS")
ANY_TIME = Rule.every_day("any time", (time(0), time.max), "FOLLOWUP_ENFORCE_CALLING_HOURS=false")


def default_rule(settings: Settings) -> Rule:
    """The hours where the number's jurisdiction has no rule of its own."""
    return Rule.every_day(
        "FOLLOWUP_CALLING_HOURS", parse_hours(settings.calling_hours), "your setting"
    )


@functools.lru_cache(maxsize=16_384)
def contact_hours(
    phone_number: str, timezone: str | None, default_timezone: str, default: Rule
) -> tuple[Rule, tuple[ZoneInfo, ...]]:
    """The rule and zone(s) for an E.164 number, remembered: they depend on the number alone,
    and working them out (parsing, geocoding) costs more than the rest of the check."""
    number = phonenumbers.parse(phone_number)
    return (
        rule_for(number, default, timezone),
        tuple(zones_for(number, timezone, default_timezone)),
    )


# --- the rule ---------------------------------------------------------------------------


def rule_for(number: phonenumbers.PhoneNumber, default: Rule, timezone: str | None = None) -> Rule:
    """The rule for a number, its holiday calendars resolved for the state(s) the number
    (and the request's `timezone`) may be in: see `holiday_calendars`."""
    rule = _jurisdiction_rule(number, default)
    codes = holiday_calendars(rule.holidays, number, timezone)
    return rule if codes == rule.holidays else dataclasses.replace(rule, holidays=codes)


def _jurisdiction_rule(number: phonenumbers.PhoneNumber, default: Rule) -> Rule:
    region = phonenumbers.region_code_for_number(number) or ""
    if region in TERRITORIES:
        return RULES[TERRITORIES[region]]
    if region == "US":
        return strictest([RULES.get(f"US-{state}", RULES["US"]) for state in us_states(number)])
    return RULES.get(region, default)


def us_states(number: phonenumbers.PhoneNumber) -> list[str]:
    """The state(s) a US number may be in: the geocoder's, else those its area code covers
    in the geocoder's data, else every state that has a rule of its own."""
    told = _states_in(geocoder.description_for_number(number, "en"))
    if told:
        return told
    national = str(number.national_number)
    covered = _area_code_states(national[:3])
    return covered or sorted(name.removeprefix("US-") for name in RULES if name.startswith("US-"))


@functools.lru_cache(maxsize=1024)
def _area_code_states(area_code: str) -> list[str]:
    prefix = "1" + area_code
    found: set[str] = set()
    for key, names in GEOCODE_DATA.items():
        if key.startswith(prefix):
            found.update(_states_in(names.get("en", "")))
    return sorted(found)


def _states_in(description: str) -> list[str]:
    """'Miami, FL' -> ['FL']; 'Florida' -> ['FL']; '' or 'United States' -> []."""
    states = []
    for part in description.split("/"):
        place, _, suffix = part.rpartition(", ")
        if place and len(suffix) == 2 and suffix.isupper():
            states.append(suffix)
        elif part.strip() in US_STATES:
            states.append(US_STATES[part.strip()])
    return states


def strictest(rules: Sequence[Rule]) -> Rule:
    """One rule that allows a call only when every one of `rules` does."""
    unique = list(dict.fromkeys(rules))
    if len(unique) == 1:
        return unique[0]
    days = tuple(_narrowest(r.days[day] for r in unique) for day in range(7))
    checked = [r.checked for r in unique if r.checked is not None]
    return Rule(
        "+".join(r.name for r in unique),
        days,
        "; ".join(dict.fromkeys(r.source for r in unique)),
        min(checked) if checked else None,
        tuple(dict.fromkeys(c for r in unique for c in r.holidays)),
    )


def _narrowest(windows: Iterable[Window | None]) -> Window | None:
    opening, closing = time.min, time.max
    for window in windows:
        if window is None:
            return None
        opening, closing = max(opening, window[0]), min(closing, window[1])
    return (opening, closing) if opening < closing else None


# --- the zones --------------------------------------------------------------------------


def zones_for(
    number: phonenumbers.PhoneNumber, timezone: str | None, default_timezone: str
) -> list[ZoneInfo]:
    """The contact's zone(s): the request's own, else the number's, else the default."""
    if timezone:
        return [ZoneInfo(timezone)]
    names = (
        _unknown_nanp_prefix(number)
        or _override(number)
        or [z for z in number_zones.time_zones_for_number(number) if z != "Etc/Unknown"]
    )
    return [ZoneInfo(name) for name in (names or [default_timezone])]


def _unknown_nanp_prefix(number: phonenumbers.PhoneNumber) -> list[str]:
    """For a NANP number whose exchange phonenumbers does not know (it matches no more than
    the area code): the zones of every exchange of that area code it does know. The area
    code's own entry names one zone, though some codes (423, 270, 850, 812, 219...) span two.
    ZONE_OVERRIDES' entry for the area code, if any, counts as one more known prefix."""
    if number.country_code != 1:
        return []
    digits = "1" + str(number.national_number)
    if len(_longest_prefix(digits, TIMEZONE_DATA)) > 4:
        return []
    return list(area_code_zones(digits[:4]))


@functools.lru_cache(maxsize=1024)
def area_code_zones(prefix: str) -> tuple[str, ...]:
    """The union of the zones of every prefix phonenumbers knows under a NANP area code
    ("1" + three digits), each corrected by ZONE_OVERRIDES; () if it knows none."""
    found: dict[str, None] = {}
    for key in sorted(TIMEZONE_DATA):
        if key.startswith(prefix):
            zones = override_for(key) or TIMEZONE_DATA[key]
            found.update(dict.fromkeys(z for z in zones if z != "Etc/Unknown"))
    return tuple(found)


def _override(number: phonenumbers.PhoneNumber) -> list[str]:
    """ZONE_OVERRIDES' zones for a NANP number where one applies, else []."""
    if number.country_code != 1:
        return []
    return list(override_for("1" + str(number.national_number)))


def override_for(digits: str) -> tuple[str, ...]:
    """The overriding zones for a NANP number or prefix ("1" + digits): an entry applies
    where it is at least as specific as the prefix phonenumbers' own data matches."""
    ours = _longest_prefix(digits, ZONE_OVERRIDES)
    if not ours or len(ours) < len(_longest_prefix(digits, TIMEZONE_DATA)):
        return ()
    return ZONE_OVERRIDES[ours]


def _longest_prefix(digits: str, table: Mapping[str, object]) -> str:
    for end in range(len(digits), 0, -1):
        if digits[:end] in table:
            return digits[:end]
    return ""


# --- holidays ---------------------------------------------------------------------------


def holiday_calendars(
    codes: Sequence[str], number: phonenumbers.PhoneNumber, timezone: str | None
) -> tuple[str, ...]:
    """The calendars a rule closes on, for this number: a state's ("US-AL") as it is; a
    country's ("AU") always, plus every state the number may be in. The candidates are the
    union of those the number's area code tells and those the request's `timezone` tells;
    where neither tells one, every state of the country (a day off in any state closes)."""
    out: list[str] = []
    for code in codes:
        country, _, subdivision = code.partition("-")
        out.append(code)
        if not subdivision:
            states = candidate_states(country, number, timezone)
            out.extend(f"{country}-{state}" for state in states)
    return tuple(dict.fromkeys(out))


def candidate_states(
    country: str, number: phonenumbers.PhoneNumber, timezone: str | None
) -> tuple[str, ...]:
    """The subdivisions of `country` a number may be in (see `holiday_calendars`)."""
    mine = phonenumbers.region_code_for_number(number) == country
    by_prefix = NUMBER_SUBDIVISIONS.get(country, {}) if mine else {}
    national = str(number.national_number)
    told = [*by_prefix.get(national[:1], ()), *ZONE_SUBDIVISIONS.get(timezone or "", ())]
    return tuple(dict.fromkeys(told)) if told else _subdivisions(country)


@functools.lru_cache(maxsize=64)
def _subdivisions(country: str) -> tuple[str, ...]:
    return tuple(holidays.country_holidays(country).subdivisions)


def holiday(codes: Sequence[str], day: date) -> str | None:
    """The name of the public holiday `day` is in one of these calendars, or None."""
    for code in codes:
        name = _calendar(code, day.year).get(day)
        if name:
            return f"{name} ({code})"
    return None


@functools.lru_cache(maxsize=512)
def _calendar(code: str, year: int) -> holidays.HolidayBase:
    country, _, subdivision = code.partition("-")
    return holidays.country_holidays(country, subdiv=subdivision or None, years=year)


# --- the arithmetic ---------------------------------------------------------------------


def next_opening(
    now: datetime,
    zones: Sequence[ZoneInfo],
    rule: Rule,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> datetime | None:
    """The first instant at or after `now` (and not_before) when every zone's window is open
    and not_after has not passed; None if there is none within the next sixteen days."""
    allowed = _allowed(now, zones, rule, not_before, not_after)
    return allowed[0][0] if allowed else None


def open_until(
    now: datetime,
    zones: Sequence[ZoneInfo],
    rule: Rule,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> datetime | None:
    """When the window open at `now` closes (the calling hours, or not_after); None if it is
    not open now. A call must leave before then: checked again at the send marker."""
    allowed = _allowed(now, zones, rule, not_before, not_after)
    if not allowed or allowed[0][0] > now:
        return None
    end = allowed[0][1]
    for start, later_end in allowed[1:]:  # one day's close and the next day's opening touch
        if start - end > timedelta(milliseconds=1):
            break
        end = max(end, later_end)
    return end


def _allowed(
    now: datetime,
    zones: Sequence[ZoneInfo],
    rule: Rule,
    not_before: datetime | None,
    not_after: datetime | None,
) -> list[tuple[datetime, datetime]]:
    """The open windows from now (or not_before) to the horizon, in order."""
    start = max(now, not_before) if not_before else now
    horizon = HOLIDAY_HORIZON if rule.holidays else HORIZON
    allowed = [(start, start + horizon)]
    codes = rule.holidays
    for zone in zones:
        allowed = _intersect(allowed, _windows(zone, rule, codes, start, start + horizon))
    if not_after is not None:
        allowed = _intersect(allowed, [(start, not_after)])
    return allowed


def _windows(
    zone: ZoneInfo, rule: Rule, codes: Sequence[str], start: datetime, end: datetime
) -> list[tuple[datetime, datetime]]:
    """The zone's open windows between start and end, as UTC instants, in order."""
    out = []
    day: date = start.astimezone(zone).date() - timedelta(days=1)
    while day <= end.astimezone(zone).date():
        window = rule.days[day.weekday()]
        if window is not None and not (codes and holiday(codes, day)):
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


# --- explaining a decision --------------------------------------------------------------


@dataclass(frozen=True)
class Explanation:
    """Why a number may or may not be called at `at`: what `followup hours` prints."""

    at: datetime
    open: bool
    next_opening: datetime | None
    rule: str
    source: str
    checked: date | None
    zones: tuple[str, ...]
    local_times: tuple[str, ...]  # `at` in each zone, ISO 8601
    holidays: tuple[str, ...]  # the calendars the rule closes on, here
    holiday: str | None  # the holiday that closes the day at `at`, if one does

    def as_dict(self) -> dict[str, object]:
        return {
            "at": self.at.isoformat(),
            "open": self.open,
            "next_opening": self.next_opening.isoformat() if self.next_opening else None,
            "rule": self.rule,
            "source": self.source,
            "checked": self.checked.isoformat() if self.checked else None,
            "zones": list(self.zones),
            "local_times": list(self.local_times),
            "holidays": list(self.holidays),
            "holiday": self.holiday,
        }


def explain(
    phone_number: str, timezone: str | None, at: datetime, settings: Settings
) -> Explanation:
    """The decision for an E.164 number at `at`, with the rule, its source and the zones."""
    rule, zones = contact_hours(
        phone_number, timezone, settings.default_timezone, default_rule(settings)
    )
    if not settings.enforce_calling_hours:
        rule = ANY_TIME
    at = at.astimezone(UTC)
    opening = next_opening(at, zones, rule)
    codes = rule.holidays
    closed_by = [h for z in zones if (h := holiday(codes, at.astimezone(z).date()))]
    return Explanation(
        at=at,
        open=opening is not None and opening <= at,
        next_opening=opening,
        rule=rule.name,
        source=rule.source,
        checked=rule.checked,
        zones=tuple(z.key for z in zones),
        local_times=tuple(at.astimezone(z).isoformat() for z in zones),
        holidays=codes,
        holiday=closed_by[0] if closed_by else None,
    )
