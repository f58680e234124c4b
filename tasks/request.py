"""FollowUpRequest: the JSON message every producer sends and the worker validates again."""

from __future__ import annotations

import functools
import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import phonenumbers
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from followup.config.redaction import mask_phone, mask_text
from followup.worker.platforms import profile_for

# Files in a zoneinfo directory that load but are not IANA zones a customer lives in: the
# host's own zone (localtime), tzdata's placeholder (Factory), a link for POSIX TZ strings
# (posixrules), and the posix/ and right/ (leap-second) copies of the tree.
_NOT_A_ZONE = re.compile(r"localtime|Factory|posixrules|(posix|right)/.*")
_zones = functools.cache(available_timezones)  # a walk of the zoneinfo tree: once

Identifier = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$",
    ),
]
MetadataValue = str | int | float | bool | None

# A request id is a Celery task id, a status-store key part, a correlation header sent to the
# platform and a word on an operator's screen: ASCII letters, digits and . _ : @ -, at most
# 128 characters, starting with a letter or digit (a uuid, "crm-123", "ticket:9@eu" ...).
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
REQUEST_ID_RULE = (
    "1 to 128 of the ASCII letters, digits and . _ : @ -, starting with a letter or digit"
)
# An idempotency key: printable ASCII, no spaces (no control character reaches a terminal).
IDEMPOTENCY_KEY_PATTERN = r"^[!-~]{1,255}$"


def request_id_problem(value: object) -> str | None:
    """Why `value` cannot be a request id (None if it can): every path checks it, so an id
    that is empty, None, not a string, too long or of other characters is never recorded,
    sent or published (Celery mints a new uuid for an empty task id)."""
    if not isinstance(value, str):
        return f"must be a string, not {type(value).__name__}"
    if not REQUEST_ID_PATTERN.fullmatch(value):
        return f"must be {REQUEST_ID_RULE}"
    return None


METADATA_MAX_KEYS = 20
METADATA_MAX_KEY_CHARS = 64
METADATA_MAX_VALUE_CHARS = 256
METADATA_MAX_BYTES = 2048
# A request's own times: within these years (UTC), and not_before at most a year ahead.
EARLIEST, LATEST = datetime(2000, 1, 1, tzinfo=UTC), datetime(3000, 1, 1, tzinfo=UTC)
NOT_BEFORE_AHEAD = timedelta(days=366)


class FollowUpRequest(BaseModel):
    """One 'call this customer back from agent U' request; phone_number is normalised to E.164."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    contact_id: Identifier = Field(description="The customer's contact id in the CRM.")
    user_id: Identifier = Field(description="The agent who places the call from their own line.")
    phone_number: str = Field(
        description="The customer's number in E.164 form (+ and country code), e.g. +61298765432."
    )
    reason: str | None = Field(None, max_length=500, description="Why the follow-up is needed.")
    metadata: dict[str, MetadataValue] = Field(
        default_factory=dict,
        description=f"Flat string -> scalar map, at most {METADATA_MAX_KEYS} keys and "
        f"{METADATA_MAX_BYTES} bytes as JSON.",
    )
    idempotency_key: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description="The caller's own id for this follow-up: the same key enqueued twice, by any "
        "path, returns the first request and never calls twice. Printable ASCII, no spaces.",
    )
    not_before: AwareDatetime | None = Field(
        None, description="Not dialled before this time (ISO 8601 with an offset)."
    )
    not_after: AwareDatetime | None = Field(
        None,
        description="Not dialled after this time (ISO 8601 with an offset); still waiting then, "
        "it ends failed with code window.missed.",
    )
    timezone: str | None = Field(
        None,
        max_length=64,
        description="The contact's IANA time zone (e.g. America/Los_Angeles); default: the "
        "number's own zone(s).",
    )

    @field_validator("timezone")
    @classmethod
    def _iana(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            ZoneInfo(value)
            real = value in _zones() and not _NOT_A_ZONE.fullmatch(value)
        except (ZoneInfoNotFoundError, ValueError):
            real = False
        if not real:
            raise ValueError(
                f"'{mask_text(value[:64])}' is not an IANA time zone; use a name such as "
                "America/Los_Angeles or Australia/Sydney"
            )
        return value

    @field_validator("not_before", "not_after")
    @classmethod
    def _in_range(cls, value: datetime | None) -> datetime | None:
        """Every instant the worker works with is one it can convert and add days to."""
        if value is None:
            return value
        try:
            in_range = EARLIEST <= value.astimezone(UTC) < LATEST
        except OverflowError:  # e.g. 9999-12-31T23:59:59-05:00 is past what a datetime holds
            in_range = False
        if not in_range:
            raise ValueError(
                f"{value.isoformat()} is out of range; give a time between "
                f"{EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d} (UTC), or none"
            )
        return value

    @model_validator(mode="after")
    def _window(self) -> FollowUpRequest:
        if self.not_before and self.not_after and self.not_before >= self.not_after:
            raise ValueError("not_before must be earlier than not_after")
        return self

    def check_times(self, now: datetime) -> None:
        """At enqueue: a not_after already past (the request could never go) and a
        not_before too far ahead are refused."""
        if self.not_after is not None and self.not_after <= now:
            raise InvalidRequest(
                [
                    FieldError(
                        field="not_after",
                        message=f"{self.not_after.isoformat()} has already passed; give a later "
                        "time, or none",
                    )
                ]
            )
        self.check_not_before(now)

    def check_not_before(self, now: datetime) -> None:
        """A not_before more than a year ahead is refused (by the producer, and by the
        worker for a message sent straight to the queue): enqueue it nearer the time."""
        if self.not_before is not None and self.not_before > now + NOT_BEFORE_AHEAD:
            raise InvalidRequest(
                [
                    FieldError(
                        field="not_before",
                        message=f"{self.not_before.isoformat()} is more than a year "
                        f"({NOT_BEFORE_AHEAD.days} days) ahead; enqueue it nearer the time",
                    )
                ]
            )

    @field_validator("phone_number")
    @classmethod
    def _e164(cls, value: str) -> str:
        masked = mask_phone(value)
        if not value.startswith("+"):
            raise ValueError(
                f"'{masked}' is not in E.164 form: start with + and the country code, "
                "e.g. +61298765432"
            )
        try:
            parsed = phonenumbers.parse(value, None)
        except phonenumbers.NumberParseException:
            parsed = None
        if parsed is None or not phonenumbers.is_valid_number(parsed):
            raise ValueError(
                f"'{masked}' is not a valid E.164 number: give the full number with its country "
                "code, e.g. +61298765432"
            )
        return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)

    @field_validator("metadata", mode="before")
    @classmethod
    def _flat(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(item, str | int | float | bool | None):
                    raise ValueError(
                        f"value of '{mask_text(str(key)[:64])}' must be a string, number, "
                        "boolean or null: "
                        "metadata is a flat map"
                    )
        return value

    @field_validator("metadata")
    @classmethod
    def _small_and_flat(cls, value: dict[str, MetadataValue]) -> dict[str, MetadataValue]:
        if len(value) > METADATA_MAX_KEYS:
            raise ValueError(f"has {len(value)} keys; at most {METADATA_MAX_KEYS} are allowed")
        for key, item in value.items():
            if not key or len(key) > METADATA_MAX_KEY_CHARS:
                raise ValueError(
                    f"key '{mask_text(key[:20])}' must be 1 to {METADATA_MAX_KEY_CHARS} characters"
                )
            if isinstance(item, str) and len(item) > METADATA_MAX_VALUE_CHARS:
                raise ValueError(
                    f"value of '{mask_text(key)}' is {len(item)} characters; at most "
                    f"{METADATA_MAX_VALUE_CHARS} are allowed"
                )
        size = len(json.dumps(value, separators=(",", ":")).encode())
        if size > METADATA_MAX_BYTES:
            raise ValueError(f"is {size} bytes as JSON; at most {METADATA_MAX_BYTES} are allowed")
        return value

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def digest(self, canonical_json: str | None = None) -> str:
        """Fingerprint of the content, to refuse one idempotency key used for two requests."""
        text = canonical_json if canonical_json is not None else self.canonical_json()
        return hashlib.sha256(text.encode()).hexdigest()


class FieldError(BaseModel):
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class InvalidRequest(ValueError):
    """The request does not validate; `errors` names each field and the fix."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("invalid follow-up request: " + "; ".join(str(e) for e in errors))


def key_conflict(key: str, first_request_id: str) -> FieldError:
    """The one wording for an idempotency key reused with different content, on every path."""
    return FieldError(
        field="idempotency_key",
        message=f"'{key}' was already used by request {first_request_id} with different "
        "content; use a new key for a different follow-up",
    )


_ALLOWED = ", ".join(FollowUpRequest.model_fields)


FIELD_ERRORS_MAX = 20


def field_errors(exc: ValidationError) -> list[FieldError]:
    """Readable, phone-safe errors: never echoes the input value (the validators mask what
    they quote). A field's name came from the sender too (an unknown field): it is masked and
    bounded like a value."""
    out = []
    for error in exc.errors(include_input=False, include_url=False)[:FIELD_ERRORS_MAX]:
        field = ".".join(str(part)[:64] for part in error["loc"])
        kind = error["type"]
        if kind == "extra_forbidden":
            message = f"unknown field; the allowed fields are {_ALLOWED}"
        elif kind == "missing":
            message = "is required"
        elif kind == "string_pattern_mismatch" and error["loc"] == ("idempotency_key",):
            message = "must be printable ASCII without spaces (1 to 255 characters)"
        else:
            message = error["msg"].removeprefix("Value error, ")
        out.append(FieldError(field=mask_text(field), message=message[:300]))
    return out


def platform_errors(request: FollowUpRequest, dialect: str) -> list[FieldError]:
    """What the configured platform (FOLLOWUP_API_DIALECT) cannot take, by its profile's
    request rule (e.g. an agent id that must be a number)."""
    return [
        FieldError(field=field, message=message)
        for field, message in profile_for(dialect).request_errors(request)
    ]


def checked_request(data: Any, dialect: str, now: datetime) -> FollowUpRequest:
    """A request as a producer may enqueue it, or InvalidRequest: valid, its times possible
    at `now`, and takeable by the platform (FOLLOWUP_API_DIALECT). Every producer path checks
    with this, so a batch is refused whole before any of it is enqueued."""
    request = parse_request(data)
    request.check_times(now)
    if problems := platform_errors(request, dialect):
        raise InvalidRequest(problems)
    return request


def parse_request(data: Any) -> FollowUpRequest:
    """Validate a dict (or a FollowUpRequest) into a FollowUpRequest, or raise InvalidRequest."""
    if isinstance(data, FollowUpRequest):
        return data
    if not isinstance(data, dict):
        raise InvalidRequest(
            [
                FieldError(
                    field="request", message=f"must be a JSON object, not {type(data).__name__}"
                )
            ]
        )
    try:
        return FollowUpRequest.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest(field_errors(exc)) from None
