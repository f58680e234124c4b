"""What a platform declares to the settings: its profile.

Each platform package under worker/platforms/ has a `profile` module with `PROFILE`, read by
the settings before any worker code loads (so it imports pydantic, the standard library and
this module only). A profile owns the platform's own settings (FOLLOWUP_<DIALECT>_<FIELD>,
a `PlatformSettings` model), its title, whether it can answer the two questions (is the
agent busy? did a call happen?) and their defaults, where its API and token are when no
FOLLOWUP_API_BASE_URL / FOLLOWUP_TOKEN_URL say, and what a request must be for it.
"""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from followup.config.redaction import mask_url


def http_url(value: str | None) -> str | None:
    """An http:// or https:// URL, without its trailing slash (ValueError otherwise)."""
    if value is not None and not value.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return value.rstrip("/") if value else value


class PlatformSettings(BaseModel):
    """One platform's own settings; each field is the variable FOLLOWUP_<DIALECT>_<FIELD>.
    A field without a default must be set when its dialect is chosen: its description says
    what it is."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def __repr_args__(self) -> Any:
        """URL passwords are secrets, as in Settings (SecretStr fields mask themselves)."""
        for name, value in super().__repr_args__():
            masked = isinstance(name, str) and name.endswith("_url") and isinstance(value, str)
            yield name, mask_url(value) if masked else value


class RequestFields(Protocol):
    """What a profile's request rule reads of a follow-up request."""

    @property
    def user_id(self) -> str: ...

    @property
    def phone_number(self) -> str: ...


class Profile:
    """The defaults: no settings of its own, no questions answered, the API at
    FOLLOWUP_API_BASE_URL and its token at {API base URL}/oauth/token, any request."""

    title = ""  # a person's name for it: "FOLLOWUP_X apply to {title} only"
    settings: type[PlatformSettings] = PlatformSettings
    answers = False  # can say whether an agent is busy and whether a call happened
    reconcile_by_default = False  # FOLLOWUP_RECONCILE's default
    check_busy_by_default = False  # FOLLOWUP_CHECK_AGENT_BUSY's default
    discovers_api = False  # without FOLLOWUP_API_BASE_URL, the API is found per token

    def default_api_base_url(self, own: Any) -> str | None:
        """The API's base without FOLLOWUP_API_BASE_URL (None: that setting's default)."""
        return None

    def default_token_url(self, own: Any) -> str | None:
        """The token URL without FOLLOWUP_TOKEN_URL (None: {API base URL}/oauth/token)."""
        return None

    def request_errors(self, request: RequestFields) -> list[tuple[str, str]]:
        """(field, message) for each thing about `request` this platform cannot take."""
        return []
