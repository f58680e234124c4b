"""The calling rules as data: one entry a jurisdiction, each with its source and the date a
person last compared it with that source; and the corrections to the number data.

Correcting a rule is a one-line change in TABLE (docs/calling-rules.md lists the same).
A rule's `holidays` names the public-holiday calendars (of the `holidays` package: a
country, or country-subdivision) on which it allows no calls at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, time

from followup.config.settings import parse_hours

Window = tuple[time, time]  # local opening and closing time, the same day
SUNDAY = 6


@dataclass(frozen=True)
class Rule:
    """Calling hours by weekday (Monday first): a local window, or None (no calls); no
    calls at all on the public holidays of the calendars in `holidays`."""

    name: str
    days: tuple[Window | None, ...]
    source: str
    checked: date | None = None  # when a person last compared it with its source
    holidays: tuple[str, ...] = ()  # e.g. ("AU",), ("US-AL",): closed on their holidays

    @classmethod
    def every_day(cls, name: str, window: Window, source: str) -> Rule:
        return cls(name, (window,) * 7, source)


def _week(
    weekdays: str | None, saturday: str | None, sunday: str | None
) -> tuple[Window | None, ...]:
    """'HH:MM-HH:MM' (or None: no calls) for Monday-Friday, Saturday and Sunday."""

    def hours(text: str | None) -> Window | None:
        return parse_hours(text) if text else None

    return (hours(weekdays),) * 5 + (hours(saturday), hours(sunday))


def _rule(
    name: str,
    weekdays: str | None,
    saturday: str | None,
    sunday: str | None,
    source: str,
    checked: str,
    holidays: tuple[str, ...] = (),
) -> Rule:
    return Rule(
        name, _week(weekdays, saturday, sunday), source, date.fromisoformat(checked), holidays
    )


# Compliance guides consulted for the US states (with the statute each one cites):
GUIDE = "ClickPoint, State Calling Hours (reviewed July 2025)"

# fmt: off
# name      Mon-Fri         Saturday        Sunday          source                                                          checked       holidays
TABLE: tuple[Rule, ...] = (
    _rule("US",    "08:00-21:00", "08:00-21:00", "08:00-21:00", "47 CFR 64.1200(c)(1): 8 am to 9 pm at the called party (also PR, GU, VI, AS, MP)", "2026-11-28"),
    _rule("US-AL", "08:00-20:00", "08:00-20:00", None,          f"Alabama PSC telephone solicitation rules: no Sunday or state-holiday calls (holidays: Ala. Code s. 1-3-8); {GUIDE}", "2026-11-28", ("US-AL",)),
    _rule("US-CT", "09:00-20:00", "09:00-20:00", "09:00-20:00", "Conn. Gen. Stat. s. 42-288a (Public Act 23-98): 9 am to 8 pm", "2026-11-28"),
    _rule("US-FL", "08:00-20:00", "08:00-20:00", "08:00-20:00", "Florida Telephone Solicitation Act, s. 501.059(8)(a): 8 am to 8 pm", "2026-11-28"),
    _rule("US-KY", "10:00-21:00", "10:00-21:00", "10:00-21:00", f"KRS 367.46955: 10 am to 9 pm; {GUIDE}", "2026-11-28"),
    _rule("US-LA", "08:00-20:00", "08:00-20:00", None,          f"La. R.S. 45:844.11 et seq. and LPSC rules: no Sunday or legal-holiday calls (holidays: La. R.S. 1:55); {GUIDE}", "2026-11-28", ("US-LA",)),
    _rule("US-MA", "08:00-20:00", "08:00-20:00", "08:00-20:00", f"Mass. Gen. Laws ch. 159C: 8 am to 8 pm; {GUIDE}", "2026-11-28"),
    _rule("US-MD", "08:00-20:00", "08:00-20:00", "08:00-20:00", "Md. Code, Com. Law s. 14-4501 et seq. (Stop the Spam Calls Act of 2023): 8 am to 8 pm", "2026-11-28"),
    _rule("US-MS", "08:00-20:00", "08:00-20:00", None,          f"Miss. Code s. 77-3-701 et seq.: no Sunday or legal-holiday calls (holidays: s. 3-3-7); {GUIDE}", "2026-11-28", ("US-MS",)),
    _rule("US-OK", "08:00-20:00", "08:00-20:00", "08:00-20:00", "Okla. Stat. tit. 15 s. 775C.4 (Telephone Solicitation Act of 2022): 8 am to 8 pm", "2026-11-28"),
    _rule("US-TX", "09:00-21:00", "09:00-21:00", "12:00-21:00", "Tex. Bus. & Com. Code s. 301.051: 9 am to 9 pm, Sunday noon to 9 pm", "2026-11-28"),
    _rule("US-WA", "08:00-20:00", "08:00-20:00", "08:00-20:00", "RCW 80.36.390(2): 8 am to 8 pm", "2026-11-28"),
    _rule("CA",    "09:00-21:30", "10:00-18:00", "10:00-18:00", "CRTC Unsolicited Telecommunications Rules (Telemarketing Rules): 9:00-21:30 weekdays, 10:00-18:00 weekends", "2026-11-28"),
    _rule("AU",    "09:00-20:00", "09:00-17:00", None,          "Telecommunications (Telemarketing and Research Calls) Industry Standard 2017: no Sunday or public-holiday calls", "2026-11-28", ("AU",)),
    _rule("GB",    "08:00-21:00", "08:00-21:00", "08:00-21:00", "no statutory hours; FCA CONC 7.9 guidance calls 9 pm to 8 am unreasonable", "2026-11-28"),
)
# fmt: on
RULES: dict[str, Rule] = {rule.name: rule for rule in TABLE}

# US territories: the federal rule, not FOLLOWUP_CALLING_HOURS (47 CFR 64.1200 applies there).
TERRITORIES: dict[str, str] = {"PR": "US", "GU": "US", "VI": "US", "AS": "US", "MP": "US"}

# Where phonenumbers' zone data is wrong: a NANP prefix (1 + area code [+ exchange]) -> the
# zones to use. An entry wins over phonenumbers' own when it is at least as long as the
# prefix phonenumbers matched (so "1867" covers only 867 numbers it knows nothing more of).
ZONE_OVERRIDES: dict[str, tuple[str, ...]] = {
    # Orlando, Florida (Eastern); the data says America/Chicago.
    "1689": ("America/New_York",),
    # Yukon, Northwest Territories and Nunavut span UTC-7 to UTC-4; the data says
    # America/Fort_Nelson only for prefixes it does not know.
    "1867": ("America/Whitehorse", "America/Edmonton", "America/Rankin_Inlet", "America/Iqaluit"),
    # Yukon keeps UTC-7 all year since 2020; the data still says America/Vancouver.
    **{
        prefix: ("America/Whitehorse",)
        for prefix in (
            "1867334",
            "1867393",
            "1867456",
            "1867536",
            "1867633",
            "1867667",
            "1867668",
            "1867993",
        )
    },
    # American Samoa: the data has no zone for most of its numbers.
    "1684": ("Pacific/Pago_Pago",),
}

# The state(s) a zone tells (Australia): their public holidays are added to the country's.
# Australia/Sydney is also Canberra's zone: both calendars apply.
ZONE_SUBDIVISIONS: dict[str, tuple[str, ...]] = {
    "Australia/Sydney": ("NSW", "ACT"),
    "Australia/Broken_Hill": ("NSW",),
    "Australia/Lord_Howe": ("NSW",),
    "Australia/Melbourne": ("VIC",),
    "Australia/Brisbane": ("QLD",),
    "Australia/Lindeman": ("QLD",),
    "Australia/Adelaide": ("SA",),
    "Australia/Perth": ("WA",),
    "Australia/Eucla": ("WA",),
    "Australia/Darwin": ("NT",),
    "Australia/Hobart": ("TAS",),
    "Antarctica/Macquarie": ("TAS",),
}

# The state(s) an Australian number tells by its area code (the first digit of the national
# number: 02, 03, 07, 08). phonenumbers' zones are not precise enough for this (+61 3 maps
# to Australia/Sydney). Mobiles and other non-geographic numbers tell no state.
NUMBER_SUBDIVISIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "AU": {
        "2": ("NSW", "ACT"),
        "3": ("VIC", "TAS"),
        "7": ("QLD",),
        "8": ("SA", "WA", "NT"),
    },
}

# US state and district names as phonenumbers' geocoder writes them -> postal codes.
US_STATES: dict[str, str] = {
    "Alabama": "AL", "Alaska": "AK", "Arizona": "AZ", "Arkansas": "AR", "California": "CA",
    "Colorado": "CO", "Connecticut": "CT", "Delaware": "DE", "Washington D.C.": "DC",
    "Florida": "FL", "Georgia": "GA", "Hawaii": "HI", "Idaho": "ID", "Illinois": "IL",
    "Indiana": "IN", "Iowa": "IA", "Kansas": "KS", "Kentucky": "KY", "Louisiana": "LA",
    "Maine": "ME", "Maryland": "MD", "Massachusetts": "MA", "Michigan": "MI", "Minnesota": "MN",
    "Mississippi": "MS", "Missouri": "MO", "Montana": "MT", "Nebraska": "NE", "Nevada": "NV",
    "New Hampshire": "NH", "New Jersey": "NJ", "New Mexico": "NM", "New York": "NY",
    "North Carolina": "NC", "North Dakota": "ND", "Ohio": "OH", "Oklahoma": "OK", "Oregon": "OR",
    "Pennsylvania": "PA", "Rhode Island": "RI", "South Carolina": "SC", "South Dakota": "SD",
    "Tennessee": "TN", "Texas": "TX", "Utah": "UT", "Vermont": "VT", "Virginia": "VA",
    "Washington State": "WA", "Washington": "WA", "West Virginia": "WV", "Wisconsin": "WI",
    "Wyoming": "WY",
}  # fmt: skip
