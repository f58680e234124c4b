"""The bundled contact-center API simulator (demo, tests, local development)."""

import re

import phonenumbers

from followup.simulator.server import make_app, serve
from followup.simulator.state import CxoneConfig, SimState, parse_client

# id:secret:scopes (conversations) or permissions (genesys): one with what a call needs, one
# without it.
DEFAULT_CLIENTS = (
    "followup-demo:demo-secret:conversation:write user:call:center:write",
    "followup-noscope:demo-secret:user:call:center:write",
)
DEFAULT_GENESYS_CLIENTS = (
    "followup-demo:demo-secret:conversation:call:add analytics:conversationDetail:view",
    "followup-noscope:demo-secret:conversation:view",
)
DEFAULT_USERS = ("u-67890", "u-1001", "u-1002", "u-1003", "u-1004")
# cxone: the registered application (Basic; no permissions of its own), the access keys of API
# users (id:secret:permissions; one that may not create callbacks), skills, numeric agent ids.
DEFAULT_CXONE_CLIENTS = ("followup-demo:demo-secret:",)
DEFAULT_CXONE_ACCESS_KEYS = (
    "followup-key:key-secret:callbacks:create agents:view contacts:view",
    "followup-nocallback:key-secret:agents:view contacts:view",
)
DEFAULT_CXONE_SKILLS = (4242, 4243)
DEFAULT_CXONE_AGENTS = ("67890", "1001", "1002", "1003", "1004")


def cxone_config(
    *,
    access_keys: list[str] | None,
    skills: list[int] | None,
    any_skill: bool,
    tenant_id: str | None,
    api_endpoint: str | None,
    api_versions: list[str] | None,
    phone_format: str | None,
    phone_region: str | None,
    dialect: str,
) -> CxoneConfig:
    """The CXone tenant that `followup simulator --dialect cxone` stands in for, from its
    flags; a cxone flag with another dialect is refused (ValueError naming the flag)."""
    flags = {
        "--access-key": access_keys,
        "--skill": skills,
        "--any-skill": any_skill,
        "--tenant-id": tenant_id,
        "--api-endpoint": api_endpoint,
        "--api-version": api_versions,
        "--phone-format": phone_format,
        "--phone-region": phone_region,
    }
    if dialect != "cxone":
        given = [flag for flag, value in flags.items() if value]
        if given:
            raise ValueError(f"{', '.join(given)}: only with --dialect cxone")
        return CxoneConfig()
    keys = dict(
        parse_client(spec, "--access-key") for spec in access_keys or DEFAULT_CXONE_ACCESS_KEYS
    )
    for version in api_versions or ():
        if not re.fullmatch(r"[1-9][0-9]*\.0", version):
            raise ValueError(f"--api-version '{version}': expected N.0, e.g. 33.0")
    if skills and any(s <= 0 for s in skills):
        raise ValueError("--skill: a CXone skill id is a positive integer")
    if phone_region and phone_region.upper() not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"--phone-region '{phone_region}': expected a region code such as US")
    defaults = CxoneConfig()
    return CxoneConfig(
        access_keys=keys,
        skills=None if any_skill else frozenset(skills or DEFAULT_CXONE_SKILLS),
        tenant_id=tenant_id or defaults.tenant_id,
        api_endpoint=api_endpoint.rstrip("/") if api_endpoint else None,
        api_versions=frozenset(api_versions) if api_versions else defaults.api_versions,
        phone_format=phone_format or "e164",
        phone_region=(phone_region or "US").upper(),
    )


__all__ = [
    "DEFAULT_CLIENTS",
    "DEFAULT_CXONE_ACCESS_KEYS",
    "DEFAULT_CXONE_AGENTS",
    "DEFAULT_CXONE_CLIENTS",
    "DEFAULT_CXONE_SKILLS",
    "DEFAULT_GENESYS_CLIENTS",
    "DEFAULT_USERS",
    "CxoneConfig",
    "SimState",
    "cxone_config",
    "make_app",
    "parse_client",
    "serve",
]
