"""The simulator's cxone mode: NICE CXone as strictly as api-contract.md §4 allows.

    POST /auth/token                                   password grant, the app as HTTP Basic
    GET  /.well-known/cxone-configuration?tenantId=    discovery: api_endpoint (no auth)
    POST /incontactapi/services/v{N}/queuecallback     ?phoneNumber=&skill=&targetAgent=
                                                       [&callerID=][&callDelay=], no body; 202
    GET  /incontactapi/services/v{N}/agents/{id}/states
    GET  /incontactapi/services/v{N}/contacts/active      agentId, toAddress, skillId,
                                                          updatedSince
    GET  /incontactapi/services/v{N}/contacts/completed   startDate, endDate, agentId, skillId,
                                                          toAddress

Errors carry their text where CXone puts it: a JSON body (error_description, else message, else
error) and/or the icStatusDescription header; a 401's body is empty.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from followup.simulator import contracts
from followup.simulator.answers import STATE_KEY, basic_auth, drop, logged, odd_answer
from followup.simulator.state import (
    CXONE_AGENTS_PERMISSION,
    CXONE_CALLBACK_PERMISSION,
    CXONE_CONTACTS_PERMISSION,
    Token,
)

API = "/incontactapi/services/v{version}"
AGENT_STATES = (
    "LoggedOut",
    "Available",
    "Unavailable",
    "InboundContact",
    "OutboundContact",
    "InboundConsult",
    "OutboundConsult",
    "Dialer",
    "LoggedIn",
)
ACTIVE_FILTERS = ("agentId", "toAddress", "skillId", "updatedSince")
COMPLETED_FILTERS = ("startDate", "endDate", "agentId", "skillId", "toAddress")


# --- answers in CXone's shapes ---------------------------------------------------------------


def cx_error(
    status: int,
    text: str,
    *,
    code: str | None = None,
    shape: str = "description",
    headers: dict[str, str] | None = None,
) -> web.Response:
    """shape: "description" {"error": code, "error_description": text}; "message"
    {"message": text}; "error" {"error": text}; "header": an empty body. The text is also
    in the icStatusDescription header, except for the body-only shapes message and error."""
    headers = dict(headers or {})
    if shape in ("description", "header"):
        headers["icStatusDescription"] = text
    if shape == "header":
        return web.Response(status=status, headers=headers)
    body: dict[str, str] = (
        {"error": code or "InvalidParameter", "error_description": text}
        if shape == "description"
        else {shape: text}
    )
    return web.json_response(body, status=status, headers=headers)


def oauth_error(status: int, error: str, description: str, **headers: str) -> web.Response:
    return web.json_response(
        {"error": error, "error_description": description}, status=status, headers=headers
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(claims: dict[str, Any], key: bytes) -> str:
    """An HS256 JWT (the simulator's own key; clients only read the claims)."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signature = hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_time(value: str) -> float | None:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


# --- token and discovery ---------------------------------------------------------------------


async def token_endpoint(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    state.token_requests += 1
    faults = state.faults
    if faults.token_latency_s:
        await asyncio.sleep(faults.token_latency_s)
    fault = faults.token_script.popleft() if faults.token_script else None
    scripted = _token_fault(fault, faults.retry_after)
    if scripted is not None:
        return scripted
    client_id, secret = basic_auth(request.headers.get("Authorization", ""))
    client = state.clients.get(client_id or "")
    if client is None or not hmac.compare_digest(client.secret, secret or ""):
        return oauth_error(
            401, "invalid_client", "The application's client id or secret is not valid"
        )
    form = await request.post()
    if form.get("grant_type") != "password":
        return oauth_error(400, "unsupported_grant_type", "Use grant_type=password")
    key_id, key_secret = form.get("username"), form.get("password")
    if not isinstance(key_id, str) or not isinstance(key_secret, str):
        return oauth_error(400, "invalid_request", "username and password are required")
    key = state.cxone.access_keys.get(key_id)
    if key is None or not hmac.compare_digest(key.secret, key_secret):
        return oauth_error(400, "invalid_grant", "The access key id or secret is not valid")
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": f"{request.scheme}://{request.host}",
        "sub": f"user:{key_id}",
        "aud": client_id,
        "name": key_id,
        "tenantId": state.cxone.tenant_id,
        "iat": now,
        "exp": now + state.token_ttl_s,
        "jti": secrets.token_hex(8),
    }
    if fault == "jwt_no_tenant":
        del claims["tenantId"]
    value = (
        secrets.token_urlsafe(24)
        if fault == "token_opaque"
        else make_jwt(claims, state.cxone.jwt_key)
    )
    state.issue_token(client_id or "", value=value, key_id=key_id)
    return web.json_response(
        {
            "access_token": value,
            "token_type": "Bearer",
            "expires_in": state.token_ttl_s,
            "refresh_token": secrets.token_urlsafe(24),
            "id_token": make_jwt({**claims, "jti": secrets.token_hex(8)}, state.cxone.jwt_key),
        }
    )


def _token_fault(fault: str | None, retry_after: str) -> web.Response | None:
    """A scripted token answer; None for "ok" and the faults that shape a good token."""
    if fault in (None, "ok", "200", "jwt_no_tenant", "token_opaque"):
        return None
    if fault.startswith("token_"):
        bad = {
            "token_crlf": "abc\r\nX-Injected: 1",
            "token_null": None,
            "token_unicode": "t\u00f6k\u20acn",
        }
        return web.json_response({"access_token": bad[fault], "expires_in": 3600})
    if fault == "400":
        return oauth_error(400, "invalid_grant", "Scripted invalid_grant from the simulator")
    if fault == "401":
        return oauth_error(401, "invalid_client", "Scripted invalid_client from the simulator")
    extra = {"Retry-After": retry_after} if fault == "429" and retry_after else {}
    return oauth_error(int(fault), "temporarily_unavailable", "Try again later", **extra)


async def discovery(request: web.Request) -> web.Response:
    """GET /.well-known/cxone-configuration?tenantId=...: where the tenant's API is."""
    state = request.app[STATE_KEY]
    state.discovery_requests += 1
    fault = state.faults.discovery_script.popleft() if state.faults.discovery_script else None
    if fault == "hang":
        await asyncio.sleep(state.faults.hang_s)
    elif fault in ("404", "500", "503"):
        return web.json_response({"error": "Scripted discovery failure"}, status=int(fault))
    tenant = request.query.get("tenantId")
    if not tenant:
        return web.json_response({"error": "tenantId is required"}, status=400)
    if tenant != state.cxone.tenant_id:
        return web.json_response({"error": f"Unknown tenant {tenant}"}, status=404)
    here = f"{request.scheme}://{request.host}"
    body: dict[str, Any] = {
        "private": False,
        "area": "na1",
        "cluster": "SIM1",
        "domain": "niceincontact.com",
        "tenantId": tenant,
        "ui_endpoint": here,
        "auth_endpoint": here,
        "api_endpoint": state.cxone.api_endpoint or here,
    }
    if fault == "no_endpoint":
        del body["api_endpoint"]
    return web.json_response(body)


# --- the API: what every call checks first ----------------------------------------------------


def _admit(request: web.Request, permission: str) -> Token | web.Response:
    """The token, once the version, the bearer token, Accept: application/json and the API
    user's permission pass; else the answer that refuses."""
    state = request.app[STATE_KEY]
    if request.match_info["version"] not in state.cxone.api_versions:
        return cx_error(404, "resource not found", shape="header")
    authorization = request.headers.get("Authorization", "")
    token = (
        state.token_for(authorization.removeprefix("Bearer "))
        if authorization.startswith("Bearer ")
        else None
    )
    if token is None:
        return cx_error(401, "Invalid token", shape="header")
    accepted = {part.split(";")[0].strip() for part in request.headers.get("Accept", "").split(",")}
    if "application/json" not in accepted:
        return cx_error(406, "No known way to render data", shape="header")
    if permission not in token.scopes:
        return cx_error(
            403,
            f"Forbidden: the API user has no permission {permission}",
            shape="message",
        )
    return token


# --- the call ---------------------------------------------------------------------------------


async def queue_callback(request: web.Request) -> web.StreamResponse:
    """Logs every queuecallback and the status it got (0: connection dropped)."""
    return await logged(
        request,
        _queue_callback,
        number=request.query.get("phoneNumber"),
        agent=request.query.get("targetAgent"),
        query=dict(request.query),
    )


async def _queue_callback(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    token = _admit(request, CXONE_CALLBACK_PERMISSION)
    if isinstance(token, web.Response):
        return token
    if await request.read():
        return cx_error(400, "queuecallback takes no body: its parameters go in the query string")
    problem, callback = contracts.cxone_callback(
        request.query,
        skills=state.cxone.skills,
        agents=state.users,
        phone_format=state.cxone.phone_format,
        phone_region=state.cxone.phone_region,
    )
    if problem is not None or callback is None:
        problem = problem or contracts.CxoneProblem("InvalidParameter", "Invalid request")
        return cx_error(400, problem.text, code=problem.code)
    faults = state.faults
    if faults.over_the_limit(time.monotonic()):
        return cx_error(429, "Too Many Requests", shape="error", headers={"Retry-After": "1"})
    fault = faults.next_call_fault("", callback.number)
    scripted = _scripted_error(fault, faults.retry_after, callback.number)
    if scripted is not None:
        return scripted
    if fault == "drop_before":
        return drop(request)
    call = state.accept_call(
        None,
        {k.lower(): v for k, v in request.headers.items()},
        token.client_id,
        request.headers.get("Authorization", ""),
        user=str(callback.agent),
        number=callback.number,
        call_id=state.cxone.new_contact_id(),
        key_id=token.key_id,
        skill=callback.skill,
        agent=callback.agent,
        caller_id=callback.caller_id,
        call_delay=callback.call_delay,
        query=dict(request.query),
        version=request.match_info["version"],
    )
    if faults.call_latency_s:
        await asyncio.sleep(faults.call_latency_s)
    if fault == "hang":
        await asyncio.sleep(faults.hang_s)
    if fault == "drop_after":
        return drop(request)
    if fault == "202_body":
        return web.json_response({"contactId": int(call["id"])}, status=202)
    return web.Response(status=202)


def _scripted_error(fault: str | None, retry_after: str, number: str) -> web.Response | None:
    """The scripted answers that take no callback, in CXone's shapes."""
    if fault is None or fault in ("drop_before", "drop_after", "hang", "202_body"):
        return None
    wait = {"Retry-After": retry_after} if retry_after else {}
    by_fault: dict[str, Callable[[], web.Response]] = {
        "429": lambda: cx_error(429, "Too Many Requests", shape="error", headers=wait),
        "429_bare": lambda: cx_error(429, "Too Many Requests", shape="error"),
        "503": lambda: cx_error(503, "Service Unavailable", shape="header", headers=wait),
        "503_bare": lambda: cx_error(503, "Service Unavailable", shape="header"),
        "400": lambda: cx_error(400, "Scripted 400 from the simulator", code="Scripted"),
        "400_header": lambda: cx_error(400, "Scripted 400 from the simulator", shape="header"),
        "400_message": lambda: cx_error(400, "Scripted 400 from the simulator", shape="message"),
        "400_error": lambda: cx_error(400, "Scripted 400 from the simulator", shape="error"),
        "403": lambda: cx_error(403, "Scripted 403 from the simulator", shape="message"),
        "404": lambda: cx_error(404, "resource not found", shape="header"),
        "echo_number": lambda: cx_error(
            400, f"Phone Number {number} is not valid. ({number.lstrip('+')})"
        ),
        "huge_400": lambda: cx_error(400, "x" * 10_000_000, shape="message"),
    }
    if fault in by_fault:
        return by_fault[fault]()
    if fault in ("408", "409", "422", "425", "500", "502", "504"):
        return cx_error(int(fault), f"Scripted {fault} from the simulator", code="Scripted")
    return odd_answer(fault, number)


# --- asking the platform ----------------------------------------------------------------------


async def agent_states(request: web.Request) -> web.StreamResponse:
    agent = request.match_info["agent_id"]
    return await _asked(request, "availability", agent, _agent_states)


async def active_contacts(request: web.Request) -> web.StreamResponse:
    return await _asked(request, "contacts_active", request.query.get("agentId"), _contacts)


async def completed_contacts(request: web.Request) -> web.StreamResponse:
    return await _asked(request, "contacts_completed", request.query.get("agentId"), _contacts)


async def _asked(
    request: web.Request,
    endpoint: str,
    user: str | None,
    answer: Callable[[web.Request, str], web.Response],
) -> web.StreamResponse:
    """A question, logged with its answer in /_sim/queries: refused (version, token, Accept,
    permission), a scripted fault (availability_script, analytics_script), or the answer."""
    state = request.app[STATE_KEY]
    entry: dict[str, Any] = {
        "endpoint": endpoint,
        "user": user,
        "query": dict(request.query),
        "status": 0,
        "at": time.time(),
    }
    state.queries.append(entry)
    availability = endpoint == "availability"
    permission = CXONE_AGENTS_PERMISSION if availability else CXONE_CONTACTS_PERMISSION
    admitted = _admit(request, permission)
    response = admitted if isinstance(admitted, web.Response) else None
    if response is None:
        faults = state.faults
        script = faults.availability_script if availability else faults.analytics_script
        fault = script.popleft() if script else None
        if fault == "hang":
            await asyncio.sleep(faults.hang_s)
        response = _question_fault(fault, faults.retry_after, endpoint) or answer(request, endpoint)
    entry["status"] = response.status
    return response


def _question_fault(fault: str | None, retry_after: str, endpoint: str) -> web.Response | None:
    wait = {"Retry-After": retry_after} if retry_after else {}
    if fault in (None, "ok", "200", "hang"):
        return None
    if fault == "odd_shape":  # valid JSON, not the shape §4 gives
        return web.json_response({"agentStates": {}} if endpoint == "availability" else [1])
    if fault in ("429", "429_bare"):
        return cx_error(
            429, "Too Many Requests", shape="error", headers=wait if fault == "429" else {}
        )
    if fault in ("503", "503_bare"):
        return cx_error(
            503, "Service Unavailable", shape="header", headers=wait if fault == "503" else {}
        )
    return cx_error(int(fault), f"Scripted {fault} from the simulator", code="Scripted")


def _agent_states(request: web.Request, _: str) -> web.Response:
    """GET .../agents/{agentId}/states: Available, unless a fault made the agent busy."""
    state = request.app[STATE_KEY]
    agent = request.match_info["agent_id"]
    if request.query:
        return cx_error(400, f"Parameter '{next(iter(request.query))}' is not valid")
    agent_id = contracts.cxone_id(agent)
    if agent_id is None or (state.users is not None and agent not in state.users):
        return cx_error(404, "Invalid Agent Id", shape="header")
    now = time.time()
    name = state.faults.agent_states.get(agent) or (
        "InboundContact" if state.faults.busy_until.get(agent, 0) > now else "Available"
    )
    body = {
        "agentStates": [
            {
                "agentId": agent_id,
                "agentStateId": AGENT_STATES.index(name),
                "agentStateName": name,
                "isACW": False,
                "outStateId": 0,
                "outStateDescription": "",
                "contactId": None,
                "skillId": None,
                "startDate": _iso(now - 60),
                "lastUpdateTime": _iso(now - 60),
            }
        ]
    }
    return web.json_response(body)


def _contacts(request: web.Request, endpoint: str) -> web.Response:
    """The callbacks accepted, as CXone lists contacts: active for contact_active_s after they
    were taken, then completed; each shows only analytics_lag_s after it was taken."""
    which = endpoint.removeprefix("contacts_")
    filters, problem = _contact_filters(request, which)
    if problem is not None:
        return cx_error(400, problem)
    state = request.app[STATE_KEY]
    now = time.time()
    found = [
        _as_contact(call, which)
        for call in state.calls
        if call["received_at"] + state.faults.analytics_lag_s <= now
        and (now - call["received_at"] < state.faults.contact_active_s) == (which == "active")
        and _matches(call, filters)
    ]
    if not found:
        return web.Response(status=204)
    return web.json_response({f"{which}Contacts": found, "totalRecords": len(found)})


def _contact_filters(request: web.Request, which: str) -> tuple[dict[str, Any], str | None]:
    known = ACTIVE_FILTERS if which == "active" else COMPLETED_FILTERS
    filters: dict[str, Any] = {}
    for name, value in request.query.items():
        if name not in known or name in filters:
            return {}, f"Parameter '{name}' is not valid"
        if name in ("agentId", "skillId"):
            filters[name] = contracts.cxone_id(value)
            if filters[name] is None:
                return {}, f"Parameter '{name}' must be an integer"
        elif name in ("updatedSince", "startDate", "endDate"):
            filters[name] = _parse_time(value)
            if filters[name] is None:
                return {}, f"Parameter '{name}' must be an ISO 8601 date and time"
        else:
            filters[name] = value
    return filters, None


def _digits(number: str) -> str:
    return "".join(c for c in number if c.isdigit())


def _matches(call: dict[str, Any], filters: dict[str, Any]) -> bool:
    """toAddress matches on its digits (the number as the tenant's dialling plan writes it)."""
    at = call["received_at"]
    return (
        filters.get("agentId", call["agent"]) == call["agent"]
        and filters.get("skillId", call["skill"]) == call["skill"]
        and _digits(filters.get("toAddress", call["number"])) == _digits(call["number"])
        and at >= filters.get("updatedSince", at)
        and at >= filters.get("startDate", at)
        and at < filters.get("endDate", at + 1)
    )


def _as_contact(call: dict[str, Any], which: str) -> dict[str, Any]:
    started = _iso(call["received_at"])
    common = {
        "contactId": int(call["id"]),
        "agentId": call["agent"],
        "skillId": call["skill"],
        "toAddress": call["number"],
        "fromAddress": call["caller_id"] or "",
        "isOutbound": True,
        "mediaTypeId": 4,
        "mediaTypeName": "Call",
    }
    if which == "active":
        return common | {
            "targetAgentId": call["agent"],
            "stateName": "Active",
            "startDate": started,
            "lastUpdateTime": started,
        }
    return common | {"contactStart": started, "endReason": "Contact Hang Up"}


def routes() -> list[web.RouteDef]:
    return [
        web.post("/auth/token", token_endpoint),
        web.get("/.well-known/cxone-configuration", discovery),
        web.post(f"{API}/queuecallback", queue_callback),
        web.get(f"{API}/agents/{{agent_id}}/states", agent_states),
        web.get(f"{API}/contacts/active", active_contacts),
        web.get(f"{API}/contacts/completed", completed_contacts),
    ]
