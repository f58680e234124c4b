"""`followup simulator`: its options, and the state they describe. Light (no aiohttp): the
CLI reads the options when it builds its parser; the server is imported only to run it."""

from __future__ import annotations

import argparse
import re

import phonenumbers

from followup.simulator.state import CxoneConfig, SimState, parse_client

DIALECTS = ("conversations", "genesys", "cxone")  # api-contract.md §1, §2, §4
HELP = "run the contact-center API simulator"

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


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The simulator's options, on the CLI's `simulator` command."""
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    p.add_argument("--port", type=int, default=8765, help="the port to listen on")
    p.add_argument(
        "--client",
        action="append",
        metavar="ID:SECRET:SCOPES",
        help="an OAuth client (repeatable); its scopes (genesys: permissions), comma- or "
        "space-separated",
    )
    p.add_argument("--user", action="append", metavar="USER_ID", help="a known agent (repeatable)")
    p.add_argument("--any-user", action="store_true", help="accept every agent id")
    p.add_argument(
        "--token-ttl", type=int, default=None, help="seconds (default 86400; cxone: 3600)"
    )
    p.add_argument(
        "--dialect",
        choices=DIALECTS,
        default="conversations",
        help="which API to stand in for (api-contract.md §1, §2 or §4)",
    )
    cx = p.add_argument_group("cxone (--dialect cxone; --client is the registered application)")
    cx.add_argument(
        "--access-key",
        action="append",
        metavar="ID:SECRET:PERMISSIONS",
        help="an API user's access key (repeatable); permissions among callbacks:create, "
        "agents:view, contacts:view",
    )
    cx.add_argument("--skill", action="append", type=int, metavar="SKILL_ID", help="(repeatable)")
    cx.add_argument("--any-skill", action="store_true", help="accept every skill id")
    cx.add_argument("--tenant-id", help="the tenantId claim of its tokens")
    cx.add_argument(
        "--api-endpoint", metavar="URL", help="what discovery answers (default: this server)"
    )
    cx.add_argument(
        "--api-version",
        action="append",
        metavar="N.0",
        help="an API version it serves (repeatable; default 12.0, 23.0, 33.0)",
    )
    cx.add_argument(
        "--phone-format",
        choices=("e164", "digits", "national"),
        help="how the tenant's dialling plan wants phoneNumber (default e164)",
    )
    cx.add_argument(
        "--phone-region", metavar="CC", help="the region of national numbers (default US)"
    )
    p.add_argument(
        "--show-secrets",
        action="store_true",
        help="show bearer tokens and phone numbers in /_sim/calls and /_sim/tokens (tests); "
        "by default they are hidden and masked",
    )


def state_from(args: argparse.Namespace) -> SimState:
    """What the simulator stands in for, from its options (ValueError naming a bad flag)."""
    cxone = args.dialect == "cxone"
    defaults = {"genesys": DEFAULT_GENESYS_CLIENTS, "cxone": DEFAULT_CXONE_CLIENTS}.get(
        args.dialect, DEFAULT_CLIENTS
    )
    clients = dict(parse_client(spec) for spec in (args.client or defaults))
    config = cxone_config(
        access_keys=args.access_key,
        skills=args.skill,
        any_skill=args.any_skill,
        tenant_id=args.tenant_id,
        api_endpoint=args.api_endpoint,
        api_versions=args.api_version,
        phone_format=args.phone_format,
        phone_region=args.phone_region,
        dialect=args.dialect,
    )
    users = (
        None
        if args.any_user
        else frozenset(args.user or (DEFAULT_CXONE_AGENTS if cxone else DEFAULT_USERS))
    )
    return SimState(
        clients=clients,
        users=users,
        token_ttl_s=args.token_ttl or (3600 if cxone else 86400),  # CXone's last about an hour
        dialect=args.dialect,
        cxone=config,
        show_secrets=args.show_secrets,
    )
