"""The calling rules at unit level, with fixed clocks: public holidays (2026 and 2027), the
stricter US states, the zone overrides, and a sweep of every NANP prefix phonenumbers knows."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import phonenumbers
import pytest
from phonenumbers.geodata import GEOCODE_DATA
from phonenumbers.tzdata import TIMEZONE_DATA

from followup.worker.calling_hours import (
    DEFAULT,
    RULES,
    next_opening,
    override_for,
    rule_for,
    strictest,
    zones_for,
)
from followup.worker.calling_rules import TABLE, US_STATES
from tests.conftest import followup

SYDNEY, PERTH, AU_MOBILE = "+61298765432", "+61892345678", "+61412345678"
MELBOURNE, BRISBANE = "+61396543210", "+61732345678"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def opening(number: str, now: str, timezone: str | None = None) -> datetime | None:
    parsed = phonenumbers.parse(number)
    zones = zones_for(parsed, timezone, "UTC")
    return next_opening(at(now), zones, rule_for(parsed, DEFAULT, timezone))


def is_open(number: str, now: str, timezone: str | None = None) -> bool:
    return opening(number, now, timezone) == at(now)


# --- the table --------------------------------------------------------------------------


def test_every_rule_has_a_source_and_the_date_it_was_checked() -> None:
    assert len({rule.name for rule in TABLE}) == len(TABLE)
    for rule in TABLE:
        assert rule.source and rule.checked is not None, rule.name
        assert len(rule.days) == 7, rule.name


# --- public holidays --------------------------------------------------------------------

AU_NATIONAL = [
    "2026-01-26",  # Australia Day
    "2026-04-03",  # Good Friday
    "2026-04-06",  # Easter Monday
    "2026-04-25",  # Anzac Day (a Saturday)
    "2026-12-25",  # Christmas Day
    "2026-12-26",  # Boxing Day (a Saturday)
    "2027-01-26",
    "2027-03-26",
    "2027-03-29",
    "2027-12-24",  # not a holiday: the control
]


@pytest.mark.parametrize("day", AU_NATIONAL)
def test_no_calls_on_australian_national_holidays(day: str) -> None:
    """For a landline in Sydney or Perth and a mobile (every zone of the country), the first
    opening from that day's midnight, in each zone, falls on that day only if it is not a
    holiday."""
    holiday = day != "2027-12-24"
    for number in (SYDNEY, PERTH, AU_MOBILE):
        for zone in zones_for(phonenumbers.parse(number), None, "UTC"):
            midnight = datetime.fromisoformat(f"{day}T00:00").replace(tzinfo=zone)
            first = opening(number, midnight.isoformat())
            assert first is not None
            same_day = first.astimezone(zone).date() == midnight.date()
            assert same_day is not holiday, (number, zone.key, day)


def test_a_holiday_waits_for_the_next_business_morning() -> None:
    # Good Friday 2027 (26 March) to Easter Monday: Sydney's next opening is Tuesday 09:00.
    assert opening(SYDNEY, "2027-03-26T10:00+11:00") == at("2027-03-30T09:00+11:00")
    # Christmas 2026 is a Friday, Boxing Day a Saturday, and NSW observes it on Monday 28th.
    assert opening(SYDNEY, "2026-12-24T20:30+11:00") == at("2026-12-29T09:00+11:00")


def test_state_holidays_where_the_number_or_the_zone_tells_the_state() -> None:
    kings_birthday_nsw = "2026-06-08T10:00"  # WA has its own in September
    assert not is_open(SYDNEY, kings_birthday_nsw + "+10:00")
    assert is_open(BRISBANE, kings_birthday_nsw + "+10:00")  # QLD's is in October
    # A mobile tells no state: every state's holidays, unless the request gives a zone.
    assert not is_open(AU_MOBILE, "2026-06-08T13:00+10:00")
    assert not is_open(AU_MOBILE, kings_birthday_nsw + "+10:00", timezone="Australia/Sydney")
    assert is_open(AU_MOBILE, "2026-06-08T12:00+08:00", timezone="Australia/Perth")
    # 2027: ANZAC Day is a Sunday; NSW observes it on Monday the 26th.
    assert not is_open(SYDNEY, "2027-04-26T10:00+10:00")


# Observed (substitute) days the `holidays` package has only in the states' calendars, and
# the states' own days: closed for a number whose state is unknown (a mobile) and for
# landlines whose area code spans states (08: SA, WA and NT).
OBSERVED = [
    (AU_MOBILE, "2026-12-28T10:00+11:00"),  # Boxing Day (a Saturday) observed on Monday
    (AU_MOBILE, "2027-12-27T10:00+11:00"),  # Christmas (a Saturday) observed
    (AU_MOBILE, "2027-12-28T10:00+11:00"),  # Boxing Day (a Sunday) observed
    (AU_MOBILE, "2028-01-03T10:00+11:00"),  # New Year's Day (a Saturday) observed
    (AU_MOBILE, "2030-01-28T10:00+11:00"),  # Australia Day (a Saturday) moved to Monday
    (PERTH, "2026-12-28T10:00+08:00"),
    (PERTH, "2030-01-28T10:00+08:00"),
    ("+61882345678", "2027-12-28T10:00+10:30"),  # Adelaide
    ("+61882345678", "2028-01-03T10:00+10:30"),
    (PERTH, "2026-06-08T10:00+08:00"),  # SA's King's Birthday: 08 may be Adelaide
    (MELBOURNE, "2026-11-03T10:00+11:00"),  # Melbourne Cup Day (VIC); +61 3 is not NSW
    (MELBOURNE, "2026-03-09T10:00+11:00"),  # Labour Day (VIC) and Eight Hours Day (TAS)
    ("+61362345678", "2026-11-03T10:00+11:00"),  # Hobart: 03 may be Victoria
    (SYDNEY, "2030-01-26T10:00+11:00"),  # Australia Day itself, national, with NSW's own
    (SYDNEY, "2026-01-26T10:00+11:00"),
]


@pytest.mark.parametrize(("number", "instant"), OBSERVED)
def test_observed_and_state_holidays_close_where_the_state_is_not_certain(
    number: str, instant: str
) -> None:
    assert not is_open(number, instant)


# The state the number tells and the state the request's `timezone` tells both count.
BOTH = [
    (SYDNEY, "Australia/Perth", "2026-10-05T03:00Z"),  # NSW Labour Day, 11:00 in Perth
    (SYDNEY, "Australia/Perth", "2026-12-28T03:00Z"),  # Boxing Day observed
    (PERTH, "Australia/Sydney", "2026-09-28T01:00Z"),  # WA's King's Birthday
    (AU_MOBILE, "Australia/Melbourne", "2026-11-03T01:00Z"),  # Melbourne Cup Day
]


@pytest.mark.parametrize(("number", "timezone", "instant"), BOTH)
def test_the_number_and_the_timezone_both_tell_states(
    number: str, timezone: str, instant: str
) -> None:
    assert not is_open(number, instant, timezone=timezone)


@pytest.mark.parametrize(
    ("number", "open_at"),
    [
        (MELBOURNE, "2026-11-04T10:00+11:00"),  # the day after Melbourne Cup Day
        (SYDNEY, "2026-11-03T10:00+11:00"),  # Melbourne Cup Day is not NSW's
        (AU_MOBILE, "2026-12-29T14:00+11:00"),  # an ordinary Tuesday, 11:00 in Perth
        ("+61882345678", "2027-12-29T13:00+10:30"),  # 11:30 in Perth
    ],
)
def test_an_ordinary_day_stays_open(number: str, open_at: str) -> None:
    assert is_open(number, open_at)


def test_a_holiday_on_a_daylight_saving_weekend() -> None:
    # Sydney moves to AEDT on Sunday 3 October 2027; Monday the 4th is NSW's Labour Day.
    assert opening(SYDNEY, "2027-10-02T17:30+10:00") == at("2027-10-05T09:00+11:00")


def test_us_states_that_close_on_their_holidays() -> None:
    birmingham, new_orleans, jackson = "+12055550100", "+15045550100", "+16015550100"
    assert not is_open(birmingham, "2026-01-19T10:00-06:00")  # MLK / Robert E. Lee Day
    assert not is_open(new_orleans, "2026-02-17T10:00-06:00")  # Mardi Gras
    assert not is_open(jackson, "2027-12-24T12:00-06:00")  # Christmas (observed)
    assert is_open("+12125550100", "2026-12-25T12:00-05:00")  # New York: federal, no ban


# --- the stricter US states -------------------------------------------------------------

# number, rule, a local time the federal 8:00-21:00 allows but the state does not, and one
# the state allows.
STATES = [
    ("+12035550100", "US-CT", "2026-07-01T08:30-04:00", "2026-07-01T19:30-04:00"),
    ("+12035550100", "US-CT", "2026-07-01T20:30-04:00", "2026-07-01T09:00-04:00"),
    ("+14105550100", "US-MD", "2026-07-01T20:30-04:00", "2026-07-01T08:00-04:00"),
    ("+16175550100", "US-MA", "2026-07-01T20:30-04:00", "2026-07-01T08:00-04:00"),
    ("+14055550100", "US-OK", "2026-07-01T20:30-05:00", "2026-07-01T08:00-05:00"),
    ("+12065550100", "US-WA", "2026-07-01T20:30-07:00", "2026-07-01T08:00-07:00"),
    ("+15025550100", "US-KY", "2026-07-01T09:30-04:00", "2026-07-01T20:30-04:00"),
    ("+12055550100", "US-AL", "2026-07-05T12:00-05:00", "2026-07-06T12:00-05:00"),
    ("+15045550100", "US-LA", "2026-07-05T12:00-05:00", "2026-07-06T12:00-05:00"),
    ("+16015550100", "US-MS", "2026-07-05T12:00-05:00", "2026-07-06T12:00-05:00"),
    ("+15125550100", "US-TX", "2026-07-05T11:00-05:00", "2026-07-05T12:00-05:00"),
    ("+15125550100", "US-TX", "2026-07-06T08:30-05:00", "2026-07-06T20:30-05:00"),
    ("+13055550100", "US-FL", "2026-07-01T20:30-04:00", "2026-07-01T08:00-04:00"),
]


@pytest.mark.parametrize(("number", "rule", "closed", "open_"), STATES)
def test_each_stricter_state(number: str, rule: str, closed: str, open_: str) -> None:
    assert rule_for(phonenumbers.parse(number), DEFAULT) is RULES[rule]
    assert not is_open(number, closed)
    assert is_open(number, open_)
    assert is_open("+12125550100", closed.replace("-05:00", "-04:00").replace("-07:00", "-04:00"))


def test_where_the_geocoder_cannot_tell_the_state_the_strictest_rule_applies() -> None:
    toll_free = phonenumbers.parse("+18005550100")  # no state at all: every state's rule
    rule = rule_for(toll_free, DEFAULT)
    assert set(rule.name.split("+")) == {name for name in RULES if name.startswith("US-")}
    assert rule.days[6] is None  # AL, LA, MS: no Sunday
    assert rule.days[0] is not None and rule.days[0][0].hour == 10  # KY opens at 10
    assert rule.days[0][1].hour == 20  # CT and others close at 20
    assert {"US-AL", "US-LA", "US-MS"} <= set(rule.holidays)
    both = strictest([RULES["US-CT"], RULES["US-KY"]])
    assert both.days[2] == (RULES["US-KY"].days[2][0], RULES["US-CT"].days[2][1])  # type: ignore[index]
    assert RULES["US-KY"].source in both.source and RULES["US-CT"].source in both.source


# --- zone overrides ---------------------------------------------------------------------


def test_689_is_eastern_time() -> None:
    orlando = phonenumbers.parse("+16895550100")
    assert [z.key for z in zones_for(orlando, None, "UTC")] == ["America/New_York"]
    assert rule_for(orlando, DEFAULT) is RULES["US-FL"]
    assert not is_open("+16895550100", "2026-07-01T20:30-04:00")  # 19:30 in Chicago


def test_867_with_an_unknown_prefix_spans_utc_minus_7_to_minus_4() -> None:
    unknown = phonenumbers.parse("+18675550100")
    zones = zones_for(unknown, None, "UTC")
    summer = {z.utcoffset(datetime(2026, 7, 1)).total_seconds() / 3600 for z in zones}  # type: ignore[union-attr]
    assert min(summer) == -7 and max(summer) == -4
    # 23:30 in Iqaluit is never callable, whatever the other zones say.
    assert not is_open("+18675550100", "2026-07-01T23:30-04:00")
    # A known Whitehorse exchange: Yukon time (UTC-7 all year), not Vancouver's.
    whitehorse = zones_for(phonenumbers.parse("+18676671234"), None, "UTC")
    assert [z.key for z in whitehorse] == ["America/Whitehorse"]


@pytest.mark.parametrize(
    ("number", "zone"),
    [
        ("+17875550100", "America/Puerto_Rico"),
        ("+16715550100", "Pacific/Guam"),
        ("+13405550100", "America/St_Thomas"),
        ("+16845550100", "Pacific/Pago_Pago"),
        ("+16705550100", "Pacific/Saipan"),
    ],
)
def test_us_territories_take_the_federal_rule(number: str, zone: str) -> None:
    parsed = phonenumbers.parse(number)
    assert rule_for(parsed, DEFAULT) is RULES["US"]
    assert [z.key for z in zones_for(parsed, None, "UTC")] == [zone]


# --- every NANP prefix against its region's span ------------------------------------------

# Standard (January) UTC offsets each region's zones span, from the tz database's zones for
# it (zone.tab), in hours.
SPANS: dict[str, tuple[float, float]] = {
    # US states and DC
    "AL": (-6, -5), "AK": (-10, -9), "AZ": (-7, -7), "AR": (-6, -6), "CA": (-8, -8),
    "CO": (-7, -7), "CT": (-5, -5), "DE": (-5, -5), "DC": (-5, -5), "FL": (-5, -5),
    "GA": (-5, -5), "HI": (-10, -10), "ID": (-8, -7), "IL": (-6, -6), "IN": (-6, -5),
    "IA": (-6, -6), "KS": (-7, -6), "KY": (-6, -5), "LA": (-6, -6), "ME": (-5, -5),
    "MD": (-5, -5), "MA": (-5, -5), "MI": (-6, -5), "MN": (-6, -6), "MS": (-6, -6),
    "MO": (-6, -6), "MT": (-7, -7), "NE": (-7, -6), "NV": (-8, -7), "NH": (-5, -5),
    "NJ": (-5, -5), "NM": (-7, -7), "NY": (-5, -5), "NC": (-5, -5), "ND": (-7, -6),
    "OH": (-5, -5), "OK": (-6, -6), "OR": (-8, -7), "PA": (-5, -5), "RI": (-5, -5),
    "SC": (-5, -5), "SD": (-7, -6), "TN": (-6, -5), "TX": (-7, -6), "UT": (-7, -7),
    "VT": (-5, -5), "VA": (-5, -5), "WA": (-8, -8), "WV": (-5, -5), "WI": (-6, -6),
    "WY": (-7, -7),
    # Canada, by province or territory (867: Yukon, NWT and Nunavut together)
    "BC": (-8, -7), "AB": (-7, -7), "SK": (-7, -6), "MB": (-6, -6), "ON": (-6, -5),
    "QC": (-5, -4), "NB": (-4, -4), "NS": (-4, -4), "PE": (-4, -4), "NL": (-4, -3.5),
    "YT": (-7, -7), "NT": (-7, -7), "NU": (-7, -5),
}  # fmt: skip
# The other NANP countries and territories, by region code.
COUNTRY_SPANS: dict[str, tuple[float, float]] = {
    "PR": (-4, -4), "VI": (-4, -4), "GU": (10, 10), "MP": (10, 10), "AS": (-11, -11),
    "AG": (-4, -4), "AI": (-4, -4), "BB": (-4, -4), "BM": (-4, -4), "BS": (-5, -5),
    "DM": (-4, -4), "DO": (-4, -4), "GD": (-4, -4), "JM": (-5, -5), "KN": (-4, -4),
    "KY": (-5, -5), "LC": (-4, -4), "MS": (-4, -4), "SX": (-4, -4), "TC": (-5, -5),
    "TT": (-4, -4), "VC": (-4, -4), "VG": (-4, -4),
}  # fmt: skip
CANADA = {
    "Alberta": ["AB"], "British Columbia": ["BC"], "British Colombia": ["BC"],
    "Manitoba": ["MB"], "New Brunswick": ["NB"], "Newfoundland and Labrador": ["NL"],
    "Nova Scotia/Prince Edward Island": ["NS", "PE"], "Ontario": ["ON"], "Quebec": ["QC"],
    "Saskatchewan": ["SK"], "Northwest Territories/Nunavut/Yukon": ["NT", "NU", "YT"],
}  # fmt: skip
# Area codes whose span is narrower or wider than their state's: Florida is Eastern but for
# its panhandle (850, and its overlay 448), which is partly Central.
AREA_CODE_SPANS: dict[str, tuple[float, float]] = {"1850": (-6, -5), "1448": (-6, -5)}
# Prefixes whose zones lie outside their region's span, accepted with the reason.
ACCEPTED: dict[str, str] = {}


def _spans(prefix: str) -> list[tuple[float, float]]:
    """The spans of the regions (state, province, NANP country) a prefix's numbers are in."""
    number = phonenumbers.parse("+" + (prefix + "2" * 11)[:11])
    if prefix[:4] in AREA_CODE_SPANS:
        return [AREA_CODE_SPANS[prefix[:4]]]
    country = phonenumbers.region_code_for_number(number) or ""
    if country not in ("US", "CA"):
        return [COUNTRY_SPANS[country]] if country in COUNTRY_SPANS else []
    area = GEOCODE_DATA.get(prefix[:4], {}).get("en", "")
    own = GEOCODE_DATA.get(prefix, {}).get("en", "")
    for text in (own, area):
        if text in CANADA:
            return [SPANS[code] for code in CANADA[text]]
        place, _, code = text.rpartition(", ")
        if place and code in SPANS:
            return [SPANS[code]]
        if text in US_STATES:
            return [SPANS[US_STATES[text]]]
    return []


def _standard_offset(zone: str) -> float:
    offset = ZoneInfo(zone).utcoffset(datetime(2026, 1, 15))
    assert offset is not None
    return offset.total_seconds() / 3600


def test_every_nanp_prefix_maps_to_zones_inside_its_regions_span() -> None:
    outside, unplaced = [], []
    prefixes = [p for p in TIMEZONE_DATA if p.startswith("1") and len(p) >= 4]
    assert len(prefixes) > 1000  # the sweep sees phonenumbers' data, not an empty table
    for prefix in sorted(prefixes):
        spans = _spans(prefix)
        if not spans:
            unplaced.append(prefix)
            continue
        low, high = min(s[0] for s in spans), max(s[1] for s in spans)
        zones = override_for(prefix) or TIMEZONE_DATA[prefix]
        wrong = [z for z in zones if not low <= _standard_offset(z) <= high]
        if wrong and prefix not in ACCEPTED:
            outside.append(f"{prefix} ({low:g}..{high:g}): {', '.join(wrong)}")
    assert outside == [], "zones outside the region's span:\n" + "\n".join(outside)
    # Numbers no region can be told for are toll-free or non-geographic codes.
    assert all(GEOCODE_DATA.get(p[:4]) is None for p in unplaced), unplaced


def _unknown_exchange(area: str) -> str | None:
    """A number under a NANP area code ("1" + 3 digits) whose exchange phonenumbers does not
    know (its zone data matches no more than the area code), or None."""
    for exchange in range(200, 1000):
        digits = f"{area}{exchange}5550"
        if not any(digits[:end] in TIMEZONE_DATA for end in range(5, len(digits) + 1)):
            return "+" + digits[:11]
    return None


def test_an_unknown_exchange_gets_every_zone_its_area_code_spans() -> None:
    areas = sorted({p[:4] for p in TIMEZONE_DATA if p.startswith("1") and len(p) > 4})
    assert len(areas) > 10  # the area codes phonenumbers splits by exchange
    missing = []
    for area in areas:
        number = _unknown_exchange(area)
        if number is None:
            continue
        known = {
            z
            for p in TIMEZONE_DATA
            if p.startswith(area)
            for z in override_for(p) or TIMEZONE_DATA[p]
        }
        zones = {z.key for z in zones_for(phonenumbers.parse(number), None, "UTC")}
        if not zones >= known - {"Etc/Unknown"}:
            missing.append(f"{number}: {sorted(known - zones)}")
    assert missing == [], "zones an area code spans but an unknown exchange misses:\n" + "\n".join(
        missing
    )


@pytest.mark.parametrize(
    ("number", "instant"),
    [
        ("+14235551234", "2026-12-01T02:30Z"),  # 21:30 in Eastern Tennessee, 20:30 Central
        ("+12705551234", "2026-12-01T13:30Z"),  # 07:30 in Central Kentucky (and KY: 10:00)
        ("+18505551234", "2026-12-01T13:30Z"),  # 07:30 in the Central panhandle
        ("+18125551234", "2026-12-01T13:30Z"),  # 07:30 in Central Indiana
        ("+12195551234", "2026-12-01T13:30Z"),  # 07:30 in Central Indiana (Gary)
    ],
)
def test_an_area_code_across_a_zone_line_is_closed_in_either_zone(
    number: str, instant: str
) -> None:
    assert not is_open(number, instant)


def test_the_docs_list_every_rule_with_its_source_and_date() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "calling-rules.md").read_text()
    lines = [line.strip() for line in doc.splitlines()]
    rows = {line.split("|")[1].strip(): line for line in lines if line.startswith("| ")}
    for rule in TABLE:
        assert rule.name in rows, f"docs/calling-rules.md has no row for {rule.name}"
        assert rule.checked is not None and rule.checked.isoformat() in rows[rule.name]


# --- followup hours ---------------------------------------------------------------------


def test_followup_hours_explains_a_decision_without_enqueueing() -> None:
    # No status store answers on port 1: the cap's calls so far are unknown, not an error.
    env = {"FOLLOWUP_ENFORCE_CALLING_HOURS": "true", "FOLLOWUP_REDIS_URL": "redis://127.0.0.1:1/0"}
    shown = followup("hours", "+13055550100", "--at", "2026-07-01T20:30-04:00", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    answer = json.loads(shown.stdout)
    assert answer["open"] is False
    assert answer["next_opening"] == "2026-07-02T12:00:00+00:00"  # 08:00 in Miami
    assert (answer["rule"], answer["zones"]) == ("US-FL", ["America/New_York"])
    assert answer["source"] == RULES["US-FL"].source
    assert answer["number_cap"] == {
        "max_calls": 3,
        "window_s": 86400,
        "calls": None,
        "next_free": None,
    }
    text = followup("hours", "+61298765432", "--at", "2026-12-25T10:00+11:00", env=env).stdout
    assert "Christmas Day" in text and "Tue 2026-12-29 09:00 in Australia/Sydney" in text
    late = followup("hours", "+61412345678", "--timezone", "Australia/Perth", "--json", env=env)
    assert json.loads(late.stdout)["zones"] == ["Australia/Perth"]

    naive = followup("hours", "+13055550100", "--at", "2026-07-01T20:30", env=env)
    assert naive.returncode == 2 and "--at" in naive.stderr and "offset" in naive.stderr
    short = followup("hours", "+612987", env=env)
    assert short.returncode == 2 and "phone_number" in short.stderr
    assert "'+612987'" not in short.stderr  # masked, even in the error
    zone = followup("hours", "+13055550100", "--timezone", "Mars/Olympus_Mons", env=env)
    assert zone.returncode == 2 and "timezone" in zone.stderr


def test_stricter_states_on_daylight_saving_days() -> None:
    # Sunday 8 March 2026: clocks spring forward at 02:00. Texas opens at noon CDT (-05:00).
    assert opening("+15125550100", "2026-03-08T01:30-06:00") == at("2026-03-08T12:00-05:00")
    # Alabama has no Sunday calls: Monday 08:00 CDT.
    assert opening("+12055550100", "2026-03-08T01:30-06:00") == at("2026-03-09T08:00-05:00")
    # Sunday 1 November 2026: back to standard time; Kentucky (Louisville) opens at 10:00 EST.
    assert opening("+15025550100", "2026-11-01T01:30-04:00") == at("2026-11-01T10:00-05:00")


@pytest.mark.parametrize(
    "instant",
    ["9999-12-31T23:00Z", "0001-01-01T00:00Z", "0001-01-01T00:00+01:00", "1999-12-31T23:59Z"],
)
def test_followup_hours_refuses_an_at_out_of_range(instant: str) -> None:
    env = {"FOLLOWUP_REDIS_URL": "redis://127.0.0.1:1/0"}
    shown = followup("hours", "+13055550100", "--at", instant, "--json", env=env)
    assert shown.returncode == 2, shown.stderr
    assert "--at" in shown.stderr and "2000-01-01" in shown.stderr
    assert "Traceback" not in shown.stderr
