"""One module a platform, and the table from FOLLOWUP_API_DIALECT to it.

Each module (`conversations`: the seed's contract, api-contract.md §1; `genesys`: Genesys
Cloud, §2; `cxone`: NICE CXone, §4) has `build(settings, http) -> Platform` (see `base`).
A fourth platform is one new module and one line here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from followup.config.settings import Settings
    from followup.worker.http import PlatformHttp
    from followup.worker.platforms.base import Platform

PLATFORMS = {
    "conversations": "followup.worker.platforms.conversations",
    "genesys": "followup.worker.platforms.genesys",
    "cxone": "followup.worker.platforms.cxone",
}


def platform_for(settings: Settings, http: PlatformHttp) -> Platform:
    """The configured platform (FOLLOWUP_API_DIALECT), built from the settings."""
    module = importlib.import_module(PLATFORMS[settings.api_dialect])
    platform: Platform = module.build(settings, http)
    return platform
