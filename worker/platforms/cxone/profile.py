"""NICE CXone's profile: its settings (FOLLOWUP_CXONE_*), its token URL, an API found per
token without FOLLOWUP_API_BASE_URL, and agent ids that are numbers."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator

from followup.config.platform_profile import PlatformSettings, Profile, RequestFields, http_url
from followup.config.settings import ConfigError, Settings

DEFAULT_TOKEN_URL = "https://cxone.niceincontact.com/auth/token"  # noqa: S105 (a URL)


class CxoneSettings(PlatformSettings):
    access_key_id: str | None = Field(
        None, max_length=256, description="cxone: the API user's access key id (username)."
    )
    access_key_secret: SecretStr | None = Field(
        None, description="cxone: the access key's secret (password)."
    )
    skill_id: int = Field(
        gt=0, description="the id (an integer) of the outbound phone skill the callbacks go to"
    )
    caller_id: str | None = Field(
        None, max_length=32, description="cxone: callerID, sent only when set."
    )
    phone_format: Literal["e164", "digits", "national"] = Field(
        "e164", description="cxone: phoneNumber as e164, digits (no +) or national digits."
    )
    api_version: str = Field(
        "33.0", pattern=r"^[0-9]{1,3}\.[0-9]$", description="cxone: the API's version (N.0)."
    )
    discovery_url: str = Field(
        "https://cxone.niceincontact.com/.well-known/cxone-configuration",
        description="cxone: where the API's address is discovered, without FOLLOWUP_API_BASE_URL.",
    )

    @field_validator("discovery_url")
    @classmethod
    def _http_scheme(cls, value: str) -> str:
        return http_url(value) or value

    def access_key(self) -> tuple[str, str]:
        """The API user's access key; ConfigError naming the variable if missing."""
        missing = [
            f"FOLLOWUP_CXONE_{name.upper()}"
            for name in ("access_key_id", "access_key_secret")
            if not getattr(self, name)
        ]
        if missing or self.access_key_id is None or self.access_key_secret is None:
            raise ConfigError(
                f"{', '.join(missing)} must be set: a cxone worker signs in with an API user's "
                "access key"
            )
        return self.access_key_id, self.access_key_secret.get_secret_value()


class CxoneProfile(Profile):
    title = "NICE CXone"
    settings = CxoneSettings
    answers = True
    reconcile_by_default = True
    check_busy_by_default = False  # CXone holds a targeted callback until the agent is free
    discovers_api = True

    def default_token_url(self, own: CxoneSettings) -> str | None:
        return DEFAULT_TOKEN_URL

    def request_errors(self, request: RequestFields) -> list[tuple[str, str]]:
        """A CXone agent id is a number."""
        if request.user_id.isascii() and request.user_id.isdigit():
            return []
        return [
            (
                "user_id",
                f"'{request.user_id}' is not a CXone agent id: with FOLLOWUP_API_DIALECT=cxone, "
                "user_id is the agent's numeric id (e.g. '1001')",
            )
        ]


PROFILE = CxoneProfile()


def of(settings: Settings) -> CxoneSettings:
    """The CXone settings of a worker configured for cxone."""
    return settings.platform_settings_as(CxoneSettings)
