"""The table from FOLLOWUP_API_DIALECT to its platform: one small package a platform.

Each package (`conversations`: the seed's contract, api-contract.md §1; `genesys`: Genesys
Cloud, §2; `cxone`: NICE CXone, §4) has two modules:

- `profile`: `PROFILE`, what the settings know of it (its own FOLLOWUP_<DIALECT>_* settings,
  defaults, request rule; see followup.config.platform_profile). Read by config, so it loads
  no worker code and no httpx.
- `client`: `build(settings, http) -> Platform` (see `base`), what the worker speaks through.

A fourth platform is one new package and one line in PLATFORMS. This module stays light: a
service that only enqueues loads it and the profiles, nothing else of the worker.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from followup.config.platform_profile import Profile
    from followup.config.settings import Settings
    from followup.worker.http import PlatformHttp
    from followup.worker.platforms.base import Platform

PLATFORMS = {
    "conversations": "followup.worker.platforms.conversations",
    "genesys": "followup.worker.platforms.genesys",
    "cxone": "followup.worker.platforms.cxone",
}


def profile_for(dialect: str) -> Profile:
    """A dialect's profile (KeyError for a dialect not in PLATFORMS)."""
    profile: Profile = importlib.import_module(f"{PLATFORMS[dialect]}.profile").PROFILE
    return profile


def platform_for(settings: Settings, http: PlatformHttp) -> Platform:
    """The configured platform (FOLLOWUP_API_DIALECT), built from the settings."""
    module = importlib.import_module(f"{PLATFORMS[settings.api_dialect]}.client")
    platform: Platform = module.build(settings, http)
    return platform
