"""One source of truth for every knob: `Settings`, read from FOLLOWUP_* environment variables.

A wrong value fails at start-up with `ConfigError`, whose message names the environment
variable and what is wrong with it (never the value of a secret).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping, Sequence
from datetime import time
from functools import lru_cache
from typing import Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from followup.config.platform_profile import PlatformSettings, Profile, http_url
from followup.config.redaction import mask_url
from followup.worker.platforms import PLATFORMS, profile_for

ENV_PREFIX = "FOLLOWUP_"
# Variables of this prefix are the test suite's own (FOLLOWUP_TEST_REDIS_URL ...), not settings.
TEST_PREFIX = ENV_PREFIX + "TEST_"
REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+sentinel://")
AMQP_SCHEMES = ("amqp://", "amqps://", "pyamqp://")


def parse_hours(text: str) -> tuple[time, time]:
    """'08:00-21:00' (seconds allowed: '08:00:30-21:00') -> (opening, closing), local times."""
    start, dash, end = text.partition("-")
    try:
        opening, closing = time.fromisoformat(start.strip()), time.fromisoformat(end.strip())
    except ValueError:
        raise ValueError(f"'{text}' is not an opening and a closing time") from None
    if not dash or closing <= opening:
        raise ValueError(f"'{text}': the closing time must come after the opening, the same day")
    return opening, closing


# A queue's name is a key in a Redis broker and a queue on RabbitMQ: no ':' (so it can never
# name a status-store key, <namespace>:...), none of kombu's own keys, no 'amq.' prefix.
QUEUE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
RESERVED_QUEUES = ("unacked", "unacked_index", "unacked_mutex", "celeryev", "celery.pidbox")


def queue_problem(name: object) -> str | None:
    """Why `name` cannot be a follow-up queue (None if it can)."""
    if not isinstance(name, str) or not QUEUE_PATTERN.fullmatch(name):
        return (
            "must be 1 to 128 of the ASCII letters, digits and _ . -, starting with a letter or "
            "digit (no ':': a queue must not name a status-store key), e.g. followup-eu"
        )
    if name in RESERVED_QUEUES or name.startswith(("_kombu", "amq.")):
        return f"'{name}' is a name the broker uses itself; choose another, e.g. followup-eu"
    return None


class ConfigError(Exception):
    """A setting is missing or wrong; the message names the FOLLOWUP_* variable."""


OwnSettings = TypeVar("OwnSettings", bound=PlatformSettings)


def platform_names() -> dict[str, tuple[str, str]]:
    """Every platform's own settings: name (<dialect>_<field>) -> (dialect, field)."""
    return {
        f"{dialect}_{field}": (dialect, field)
        for dialect in PLATFORMS
        for field in _installed_profile(dialect).settings.model_fields
    }


def _installed_profile(dialect: str) -> Profile:
    """A dialect's profile; ConfigError if the table names a package that is not installed
    (every profile is read to know every setting, so this stops any process)."""
    try:
        return profile_for(dialect)
    except ImportError as exc:
        raise ConfigError(
            f"invalid configuration: FOLLOWUP_API_DIALECT: the platform '{dialect}' is in the "
            f"table (followup.worker.platforms.PLATFORMS) but its package {PLATFORMS[dialect]} "
            f"cannot be imported ({type(exc).__name__}: {exc}); is it installed?"
        ) from None


def setting_names() -> list[str]:
    """Every setting's name (FOLLOWUP_ + its name upper-cased): the common ones, then each
    platform's own."""
    return [*Settings.model_fields, *platform_names()]


class Settings(BaseSettings):
    """Every setting; read from the FOLLOWUP_* environment, or given by name. A bad value, or
    a FOLLOWUP_* variable (or a name) that is no setting, raises ConfigError.

    The chosen platform's own settings (FOLLOWUP_<DIALECT>_<FIELD>; by name <dialect>_<field>)
    are validated by its profile into `platform_settings`; another platform's are refused."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)
    _platform: PlatformSettings = PrivateAttr(default_factory=PlatformSettings)

    def __init__(self, _unknown: Sequence[str] = (), **values: Any) -> None:
        """_unknown: unknown variables already found (load_settings), named with the rest:
        an unknown name does not hide a bad value until the next start."""
        unknown = [*_unknown, *unknown_names(values, prefix="")]
        known = setting_names()
        values = {name: value for name, value in values.items() if name in known}
        reads_environment = self._reads_environment()
        if reads_environment:
            unknown += unknown_variables(os.environ)
        names = platform_names()
        own = {name: value for name, value in values.items() if name in names}
        if reads_environment:
            for name, value in settings_in(os.environ).items():
                if name in names:
                    own.setdefault(name, value)
        common_problems: list[str] = []
        try:
            super().__init__(**{k: v for k, v in values.items() if k not in names})
        except ValidationError as exc:
            common_problems = _problems(exc)
        # When a common setting is wrong too, the platform's are checked as well (every bad
        # variable named at once), against the dialect as given.
        dialect = _given_dialect(values, reads_environment) if common_problems else self.api_dialect
        platform, problems = _own_settings(dialect, {names[k]: v for k, v in own.items()})
        if unknown or common_problems or problems or platform is None:
            raise ConfigError(
                "invalid configuration: " + "; ".join(unknown + common_problems + problems)
            )
        self._platform = platform

    @classmethod
    def _reads_environment(cls) -> bool:
        return True

    redis_url: str = Field(
        "redis://localhost:6379/0", description="Redis for the status store (and the broker)."
    )
    redis_timeout_s: float = Field(
        5.0, gt=0, le=60, description="A status-store command unanswered this long is an outage."
    )
    broker_url: str | None = Field(
        None, description="Celery broker (Redis or RabbitMQ); defaults to the Redis URL."
    )
    queue_type: Literal["quorum", "classic"] = Field(
        "quorum", description="RabbitMQ: the follow-up queue's type."
    )
    redis_wait_replicas: int = Field(
        0, ge=0, le=10, description="Replicas that must acknowledge each claim and send marker."
    )
    namespace: str = Field(
        "followup", pattern=r"^[A-Za-z0-9_.:-]{1,64}$", description="Prefix of status-store keys."
    )
    queue: str = Field("followup", description="The broker queue workers consume.")

    api_dialect: str = Field(
        "conversations",
        description="The platform: a key of the table followup.worker.platforms.PLATFORMS.",
    )
    reconcile: bool | None = Field(
        None,
        description="Settle unknown outcomes by asking the platform (default: the platform's).",
    )
    reconcile_after_s: float = Field(60.0, gt=0, le=3600, description="The first lookup's delay.")
    reconcile_for_s: float = Field(1800.0, gt=0, le=86400, description="How long lookups go on.")
    check_agent_busy: bool | None = Field(
        None, description="Do not dial an agent on another call (default: the platform's)."
    )
    agent_busy_recheck_s: float = Field(30.0, gt=0, le=3600)
    api_base_url: str = Field(
        "http://127.0.0.1:8765",
        description="Contact-center API (default: the platform's, else the simulator).",
    )
    token_url: str | None = Field(
        None, description="Default: the platform's, else {API_BASE_URL}/oauth/token."
    )
    client_id: str | None = None
    client_secret: SecretStr | None = None
    http_timeout_s: float = Field(
        10.0, gt=0, le=120, description="The most one HTTP request may take, all told."
    )
    http_keepalive_s: float = Field(
        4.0, ge=0, le=60, description="Idle connections older than this are not reused."
    )
    max_retry_after_s: float = Field(
        300.0, gt=0, le=86400, description="The longest Retry-After the platform may impose."
    )

    max_attempts: int = Field(
        5, ge=1, le=50, description="Attempts that reached the platform and failed, at most."
    )
    max_wait_s: int = Field(
        3 * 86400, ge=60, description="A request not placed this long after enqueue is given up."
    )
    rate_limit_per_s: float = Field(
        5.0, gt=0, le=10000, description="Create-call requests a second, for the whole fleet."
    )
    rate_burst: int = Field(1, ge=1, le=1000)
    per_user_interval_s: float = Field(
        30.0, ge=0, le=86400, description="The least time between two calls of one agent."
    )
    per_number_max_calls: int = Field(
        3,
        ge=0,
        le=1000,
        description="Calls to one number within FOLLOWUP_PER_NUMBER_WINDOW_S (0: no cap).",
    )
    per_number_window_s: float = Field(
        86400.0, gt=0, le=30 * 86400, description="The per-number cap's rolling window."
    )
    breaker_failures: int = Field(5, ge=1, le=1000)
    breaker_cooldown_s: float = Field(30.0, gt=0, le=3600)
    backoff_base_s: float = Field(2.0, gt=0, le=3600)
    backoff_max_s: float = Field(300.0, gt=0, le=86400)

    enforce_calling_hours: bool = Field(
        True, description="Dial only within the customer's calling hours (off: testing only)."
    )
    calling_hours: str = Field(
        "08:00-21:00", description="Local hours where the country has no rule of its own."
    )
    default_timezone: str = Field(
        "UTC", description="The zone of a number that maps to none (e.g. +800, satellite)."
    )
    idempotency_ttl_s: int = Field(7 * 86400, ge=60)
    record_ttl_s: int = Field(30 * 86400, ge=60)
    claim_lease_s: float = Field(60.0, gt=0, le=3600)
    redeliver_after_s: float = Field(60.0, gt=0, le=3600)
    sweep_interval_s: float = Field(1.0, gt=0, le=60)
    visibility_timeout_s: int = Field(3600, ge=60)

    outcomes_maxlen: int = Field(
        100_000, ge=100, description="About how many entries the outcome stream keeps."
    )
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="Serve Prometheus metrics on this port (per process)."
    )
    metrics_address: str = Field(
        "127.0.0.1",
        min_length=1,
        description="The address worker metrics listen on (0.0.0.0: every interface).",
    )
    worker_concurrency: int = Field(32, ge=1, le=256)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["console", "json"] = "console"

    def __repr_args__(self) -> Any:
        """URL passwords are secrets: repr() and str() show them masked."""
        for name, value in super().__repr_args__():
            masked = isinstance(name, str) and name.endswith("_url") and isinstance(value, str)
            yield name, mask_url(value) if masked else value
        yield "platform_settings", self._platform

    @field_validator("api_dialect")
    @classmethod
    def _known_dialect(cls, value: str) -> str:
        if value not in PLATFORMS:
            raise ValueError(f"'{value}' is no platform; one of {', '.join(PLATFORMS)}")
        return value

    @field_validator("queue")
    @classmethod
    def _queue(cls, value: str) -> str:
        problem = queue_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(REDIS_SCHEMES):
            raise ValueError(
                "must start with redis://, rediss://, unix:// or redis+sentinel:// "
                "(redis+sentinel://host:26379,host2:26379/mymaster/0)"
            )
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith((*REDIS_SCHEMES[:3], *AMQP_SCHEMES)):
            raise ValueError("must start with redis://, rediss://, unix://, amqp:// or amqps://")
        return value

    @field_validator("api_base_url", "token_url")
    @classmethod
    def _http_scheme(cls, value: str | None) -> str | None:
        return http_url(value)

    @field_validator("calling_hours")
    @classmethod
    def _hours(cls, value: str) -> str:
        try:
            parse_hours(value)
        except ValueError as exc:
            raise ValueError(f"{exc}; write it as HH:MM-HH:MM, e.g. 08:00-21:00") from None
        return value

    @field_validator("default_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"'{value}' is not an IANA time zone, e.g. Europe/London") from None
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        asking = [
            f"{ENV_PREFIX}{name.upper()}=true"
            for name in ("reconcile", "check_agent_busy")
            if getattr(self, name)
        ]
        if self.broker_url is None and self.redis_url.startswith("redis+sentinel://"):
            raise ValueError(
                "FOLLOWUP_BROKER_URL must be set when FOLLOWUP_REDIS_URL is a Sentinel URL: "
                "use RabbitMQ (amqp://...) as the broker of a fleet whose store fails over"
            )
        if asking and not self.profile.answers:
            answering = [d for d in PLATFORMS if profile_for(d).answers]
            raise ValueError(
                f"{', '.join(asking)} need a platform that can answer "
                f"({' or '.join(answering)}): {self.profile.title} cannot"
            )
        if self.backoff_max_s < self.backoff_base_s:
            raise ValueError(
                "FOLLOWUP_BACKOFF_MAX_S must be at least FOLLOWUP_BACKOFF_BASE_S "
                f"({self.backoff_base_s})"
            )
        # A claim must outlive the longest attempt: token fetch + call, twice (the 401 path).
        if self.claim_lease_s <= 4 * self.http_timeout_s:
            raise ValueError(
                "FOLLOWUP_CLAIM_LEASE_S must be longer than 4 x FOLLOWUP_HTTP_TIMEOUT_S "
                f"(> {4 * self.http_timeout_s:g}); an attempt may take that long"
            )
        if self.visibility_timeout_s <= 2 * self.claim_lease_s:
            raise ValueError(
                "FOLLOWUP_VISIBILITY_TIMEOUT_S must be more than 2 x FOLLOWUP_CLAIM_LEASE_S "
                f"(> {2 * self.claim_lease_s:g})"
            )
        if self.record_ttl_s <= 2 * self.visibility_timeout_s:
            raise ValueError(
                "FOLLOWUP_RECORD_TTL_S must be more than 2 x FOLLOWUP_VISIBILITY_TIMEOUT_S "
                f"(> {2 * self.visibility_timeout_s}): a message the broker gives back after the "
                "visibility timeout must still find its record, or it would be dialled again"
            )
        if self.record_ttl_s < self.idempotency_ttl_s:
            raise ValueError(
                "FOLLOWUP_RECORD_TTL_S must be at least FOLLOWUP_IDEMPOTENCY_TTL_S: an idempotency "
                "key must never outlive the request it points to"
            )
        return self

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or self.redis_url

    @property
    def broker_is_rabbitmq(self) -> bool:
        return self.effective_broker_url.startswith(AMQP_SCHEMES)

    @property
    def profile(self) -> Profile:
        """What the chosen platform (FOLLOWUP_API_DIALECT) declares to the settings."""
        return profile_for(self.api_dialect)

    @property
    def platform_settings(self) -> PlatformSettings:
        """The chosen platform's own settings (FOLLOWUP_<DIALECT>_*), validated."""
        return self._platform

    def platform_settings_as(self, kind: type[OwnSettings]) -> OwnSettings:
        """The chosen platform's own settings as `kind`; ConfigError if another is chosen."""
        if not isinstance(self._platform, kind):
            raise ConfigError(
                f"FOLLOWUP_API_DIALECT is {self.api_dialect}: these settings have no "
                f"{kind.__name__}"
            )
        return self._platform

    @property
    def api_discovered(self) -> bool:
        """True when the platform finds its API per token (no FOLLOWUP_API_BASE_URL)."""
        return self.profile.discovers_api and "api_base_url" not in self.model_fields_set

    @property
    def effective_api_base_url(self) -> str:
        """FOLLOWUP_API_BASE_URL if set, else the platform's default (e.g. from a region),
        else the setting's default."""
        if "api_base_url" not in self.model_fields_set:
            default = self.profile.default_api_base_url(self._platform)
            if default:
                return default
        return self.api_base_url

    @property
    def effective_token_url(self) -> str:
        """FOLLOWUP_TOKEN_URL if set, else the platform's default (e.g. from a region), else
        {API base URL}/oauth/token."""
        if self.token_url:
            return self.token_url
        default = self.profile.default_token_url(self._platform)
        return default or f"{self.effective_api_base_url}/oauth/token"

    def require_credentials(self) -> tuple[str, str]:
        """The API credentials a worker needs; ConfigError naming the variable if missing."""
        missing = [
            f"{ENV_PREFIX}{name.upper()}"
            for name, value in (
                ("client_id", self.client_id),
                ("client_secret", self.client_secret),
            )
            if not value
        ]
        if missing or self.client_id is None or self.client_secret is None:
            raise ConfigError(
                f"{', '.join(missing)} must be set: the worker needs OAuth client credentials "
                "for the contact-center API"
            )
        return self.client_id, self.client_secret.get_secret_value()


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the FOLLOWUP_* variables (of `environ`, default the process's environment);
    raise ConfigError that names each bad or unknown variable."""
    if environ is None:
        return Settings()
    known = setting_names()
    values: dict[str, Any] = {k: v for k, v in settings_in(environ).items() if k in known}
    return _OnlyGiven(_unknown=unknown_variables(environ), **values)


def check_environment(environ: Mapping[str, str] | None = None) -> None:
    """ConfigError if a FOLLOWUP_* variable is no setting: a misspelt one would be ignored."""
    problems = unknown_variables(os.environ if environ is None else environ)
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))


def settings_in(environ: Mapping[str, str]) -> dict[str, str]:
    """The FOLLOWUP_* variables of `environ` by setting name (FOLLOWUP_MAX_ATTEMPTS ->
    max_attempts); the prefix in any case, as pydantic-settings reads the common ones."""
    return {
        name[len(ENV_PREFIX) :].lower(): value
        for name, value in environ.items()
        if name.upper().startswith(ENV_PREFIX) and not name.upper().startswith(TEST_PREFIX)
    }


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One line for each FOLLOWUP_* variable that is no setting, naming the closest one."""
    return unknown_names(settings_in(environ), prefix=ENV_PREFIX)


def unknown_names(values: Mapping[str, Any], prefix: str) -> list[str]:
    """One line for each name that is no setting (`prefix` + its name upper-cased, when it
    comes from the environment), with the closest known name."""
    known = setting_names()
    problems = []
    for name in sorted(values):
        if name in known:
            continue
        shown = f"{prefix}{name.upper()}" if prefix else name
        closest = difflib.get_close_matches(name.lower(), known, n=1, cutoff=0.6)
        hint = ""
        if closest:
            hint = (
                f"; did you mean {prefix}{closest[0].upper()}?"
                if prefix
                else (f"; did you mean {closest[0]}?")
            )
        problems.append(f"{shown}: unknown setting{hint}")
    return problems


class _OnlyGiven(Settings):
    """Settings from the values given, and nothing else (not the process's environment)."""

    @classmethod
    def _reads_environment(cls) -> bool:
        return False

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: Any, *_: Any, **__: Any
    ) -> tuple[Any, ...]:
        return (init_settings,)


def _given_dialect(values: Mapping[str, Any], reads_environment: bool) -> str | None:
    """FOLLOWUP_API_DIALECT as given by name, else as in the environment, else its default;
    None if that is no platform (a problem named on its own)."""
    given = values.get("api_dialect")
    if given is None and reads_environment:
        given = settings_in(os.environ).get("api_dialect")
    if given is None:
        given = Settings.model_fields["api_dialect"].default
    return given if isinstance(given, str) and given in PLATFORMS else None


def _own_settings(
    dialect: str | None, given: dict[tuple[str, str], Any]
) -> tuple[PlatformSettings | None, list[str]]:
    """The chosen platform's settings, validated by its profile (None if any is bad), and a
    line naming each variable of another platform and each bad value of its own."""
    if dialect is None:
        return None, []
    foreign: dict[str, list[str]] = {}
    for (other, field), value in given.items():
        # Empty: compose passes every variable it names through, set or not.
        if other != dialect and value not in (None, ""):
            foreign.setdefault(other, []).append(f"{ENV_PREFIX}{other}_{field}".upper())
    problems = [
        f"{', '.join(variables)} apply to {profile_for(other).title} only: set "
        f"FOLLOWUP_API_DIALECT={other} (it is {dialect})"
        for other, variables in foreign.items()
    ]
    mine = {f: v for (d, f), v in given.items() if d == dialect}
    try:
        return profile_for(dialect).settings(**mine), problems
    except ValidationError as exc:
        return None, problems + _problems(exc, dialect)


def _problems(exc: ValidationError, dialect: str = "") -> list[str]:
    """Each error naming its variable; `dialect`: the errors of that platform's own settings
    (FOLLOWUP_<DIALECT>_<FIELD>), where a missing one says what it is."""
    prefix = f"{ENV_PREFIX}{dialect}_" if dialect else ENV_PREFIX
    lines = []
    for error in exc.errors(include_input=False, include_url=False):
        message = error["msg"].removeprefix("Value error, ")
        if not error["loc"]:
            lines.append(message)
            continue
        variable = (prefix + "_".join(str(part) for part in error["loc"])).upper()
        if dialect and error["type"] == "missing":
            field = profile_for(dialect).settings.model_fields[str(error["loc"][0])]
            lines.append(
                f"{variable} must be set for FOLLOWUP_API_DIALECT={dialect}: {field.description}"
            )
        else:
            lines.append(f"{variable}: {message}")
    return lines


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once."""
    return load_settings()
