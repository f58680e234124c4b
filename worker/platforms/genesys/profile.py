"""Genesys Cloud's profile: its settings (FOLLOWUP_GENESYS_*), and its region giving the API
and login hosts."""

from __future__ import annotations

from pydantic import Field, field_validator

from followup.config.platform_profile import PlatformSettings, Profile
from followup.config.settings import Settings

# Genesys Cloud's regions (api-contract.md §2): https://api.{region}, https://login.{region}.
GENESYS_REGIONS = (
    "mypurecloud.com",
    "mypurecloud.ie",
    "mypurecloud.com.au",
    "mypurecloud.jp",
    "mypurecloud.de",
    "usw2.pure.cloud",
    "cac1.pure.cloud",
    "apne2.pure.cloud",
    "euw2.pure.cloud",
    "aps1.pure.cloud",
    "sae1.pure.cloud",
    "mec1.pure.cloud",
    "apne3.pure.cloud",
    "euc2.pure.cloud",
    "mxc1.pure.cloud",
    "apse1.pure.cloud",
    "use2.us-gov-pure.cloud",
)


class GenesysSettings(PlatformSettings):
    region: str | None = Field(
        None,
        description="A Genesys Cloud region, e.g. mypurecloud.com.au: the API and login hosts.",
    )
    caller_id: str | None = Field(None, max_length=64)
    caller_id_name: str | None = Field(None, max_length=128)
    queue_id: str | None = Field(None, max_length=128)

    @field_validator("region")
    @classmethod
    def _known_region(cls, value: str | None) -> str | None:
        if value is not None and value not in GENESYS_REGIONS:
            raise ValueError(
                f"'{value}' is not a Genesys Cloud region; one of {', '.join(GENESYS_REGIONS)}"
            )
        return value


class GenesysProfile(Profile):
    title = "Genesys Cloud"
    settings = GenesysSettings
    answers = True
    reconcile_by_default = True
    check_busy_by_default = True

    def default_api_base_url(self, own: GenesysSettings) -> str | None:
        return f"https://api.{own.region}" if own.region else None

    def default_token_url(self, own: GenesysSettings) -> str | None:
        return f"https://login.{own.region}/oauth/token" if own.region else None


PROFILE = GenesysProfile()


def of(settings: Settings) -> GenesysSettings:
    """The Genesys settings of a worker configured for genesys."""
    return settings.platform_settings_as(GenesysSettings)
