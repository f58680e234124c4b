"""The bundled contact-center API simulator: a real HTTP server, strict about the contract.

Contract endpoints (api-contract.md §1):
    POST /oauth/token                              client credentials, Basic auth
    POST /api/v2/conversations/calls               create a Personal Connection call
    POST /api/v2/outbound/campaigns/{id}/calls     the seed's mistake: the seed's 400

Genesys Cloud (§2) with --dialect genesys; NICE CXone (§4) with --dialect cxone (cxone.py).

Inspection and fault injection (for tests, the demo and benchmarks):
    GET  /_sim/calls        calls accepted, with body, Authorization and correlation id
                            (tokens hidden and numbers masked, unless --show-secrets)
    GET  /_sim/queries      every question (genesys: availability, analytics; cxone: agent
                            states, contacts): endpoint, user, query, status
    GET  /_sim/tokens       tokens issued: {token: client_id} (with --show-secrets), how many
                            per client, token and discovery requests
    POST /_sim/faults       {"script": ["503","503"], "by_contact": {"c-1": ["hang"]},
                             "by_number": {"+61298765432": ["429"]},
                             "rate": 0.2, "kinds": ["503","429","hang"],
                             "call_latency_s": 0, "token_latency_s": 0, "retry_after": "1",
                             "hang_s": 30, "seed": 1, "token_script": ["503"],
                             cxone: "discovery_script": ["503"], "agent_states": {"1001":
                             "Dialer"}, "contact_active_s": 60, "analytics_lag_s": 0,
                             genesys: "availability_script": ["429"], "analytics_script":
                             ["503", "odd_shape"], "analytics_padding": 40,
                             "token_rate_limit": 5, "rate_window_s": 1}
    POST /_sim/expire-tokens   every issued token now answers 401
    GET  /_sim/requests     every create-call request: correlation id and the status answered
    POST /_sim/reset           forget calls, requests and faults (tokens stay valid)
"""

from __future__ import annotations

import asyncio
import hmac
import json
import random
import time
import uuid
from collections import deque
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from followup.config.redaction import mask_text
from followup.simulator import contracts, cxone
from followup.simulator.answers import STATE_KEY, basic_auth, drop, error, logged, odd_answer
from followup.simulator.state import (
    CXONE_FAULT_KINDS,
    CXONE_QUERY_FAULT_KINDS,
    CXONE_TOKEN_FAULT_KINDS,
    DISCOVERY_FAULT_KINDS,
    FAULT_KINDS,
    QUERY_FAULT_KINDS,
    TOKEN_FAULT_KINDS,
    Faults,
    SimState,
    Token,
    deep_json,
)


def invalid(message: str, code: str = "invalid.parameter") -> web.Response:
    return error(400, "bad.request", "Invalid request body", [{"message": message, "code": code}])


async def token_endpoint(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    state.token_requests += 1
    if state.faults.token_latency_s:
        await asyncio.sleep(state.faults.token_latency_s)
    if state.faults.token_script:
        fault = state.faults.token_script.popleft()
        if fault == "token_deep":
            return _raw_json(b'{"access_token": ' + deep_json() + b', "expires_in": 3600}')
        if fault == "refusal_deep":
            return _raw_json(b'{"error": ' + deep_json() + b"}", status=401)
        if fault.startswith("token_"):
            bad = {
                "token_crlf": "abc\r\nX-Injected: 1",
                "token_null": None,
                "token_unicode": "t\u00f6k\u20acn",
            }[fault]
            return web.json_response({"access_token": bad, "expires_in": 3600})
        if fault == "429":
            return error(
                429,
                "too.many.requests.retry.after",
                "Retry the request later",
                headers={"Retry-After": state.faults.retry_after},
            )
        if fault not in ("ok", "200"):
            return error(int(fault), "service.unavailable", "Token service unavailable")
    client_id, secret = basic_auth(request.headers.get("Authorization", ""))
    form = await request.post()
    if form.get("grant_type") != "client_credentials":
        return web.json_response({"error": "unsupported_grant_type"}, status=400)
    client = state.clients.get(client_id or "")
    if client is None or not hmac.compare_digest(client.secret, secret or ""):
        return web.json_response(
            {"error": "invalid_client", "error_description": "client authentication failed"},
            status=401,
        )
    value, token = state.issue_token(client_id or "")
    body: dict[str, Any] = {
        "access_token": value,
        "token_type": "bearer",
        "expires_in": state.token_ttl_s,
    }
    if state.dialect == "conversations":  # Genesys grants permissions by role, not scope
        body["scope"] = " ".join(sorted(token.scopes))
    return web.json_response(body)


async def create_call(request: web.Request) -> web.StreamResponse:
    """Logs every create-call request and the status it got (0: connection dropped)."""
    return await logged(request, _create_call)


async def _create_call(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    authorization = request.headers.get("Authorization", "")
    token = (
        state.token_for(authorization.removeprefix("Bearer "))
        if authorization.startswith("Bearer ")
        else None
    )
    if token is None:
        return error(
            401,
            "authentication.required",
            "Authentication failed: the bearer token is missing, unknown or expired",
        )
    if state.faults.token_over_the_limit(authorization, time.monotonic()):
        return _throttled("1")
    genesys = state.dialect == "genesys"
    if genesys and not token.scopes & contracts.GENESYS_PERMISSIONS:
        needed = " or ".join(sorted(contracts.GENESYS_PERMISSIONS))
        return error(
            403,
            "missing.any.permissions",
            f"Missing any permissions: {needed}",
            params={"permissions": needed},
        )
    if not genesys and contracts.CONVERSATIONS_SCOPE not in token.scopes:
        scope = contracts.CONVERSATIONS_SCOPE
        return error(403, "missing.any.permissions", f"Missing required scope: {scope}")
    try:
        body = json.loads(await request.read())
    except ValueError:
        return invalid("Request body is not valid JSON", "invalid.json")
    if genesys:
        problem, parts = contracts.genesys_call(request.match_info["user_id"], body)
    else:
        problem, parts = contracts.conversations_call(body)
    if problem or parts is None:
        return invalid(problem or "Invalid request body")
    if state.users is not None and parts.user not in state.users:
        return error(
            404,
            "not.found",
            f"User '{parts.user}' was not found",
            [{"message": f"No user with id '{parts.user}'", "code": "user.not.found"}],
        )
    return await _answer(request, state, token.client_id, authorization, body, parts)


async def _answer(
    request: web.Request,
    state: SimState,
    client_id: str,
    authorization: str,
    body: dict[str, Any],
    parts: contracts.Parts,
) -> web.StreamResponse:
    """A valid request: the next scripted fault, or a new conversation."""
    faults = state.faults
    if faults.over_the_limit(time.monotonic()):
        return error(429, "too.many.requests", "Rate limit exceeded", headers={"Retry-After": "1"})
    fault = faults.next_call_fault(parts.contact or "", parts.number)
    if fault == "drop_before":
        return drop(request)
    if fault in ("429", "503"):
        genesys = state.dialect == "genesys"
        return error(
            int(fault),
            ("too.many.requests.retry.after" if genesys else "too.many.requests")
            if fault == "429"
            else "service.unavailable",
            "Rate limit exceeded" if fault == "429" else "Service temporarily unavailable",
            headers={"Retry-After": faults.retry_after} if faults.retry_after else None,
            params={"retryAfter": faults.retry_after}
            if fault == "429" and genesys and faults.retry_after
            else None,
        )
    if fault in ("500", "502", "504"):
        return error(int(fault), "internal.server.error", "The platform failed")
    if fault in ("400", "409", "422"):
        return error(
            int(fault),
            "bad.request" if fault == "400" else "conflict",
            "Invalid request body" if fault == "400" else "The request conflicts",
            [{"message": f"Scripted {fault} from the simulator", "code": "scripted"}],
        )
    if fault in ("408", "425"):
        return error(
            int(fault),
            "request.timeout" if fault == "408" else "too.early",
            "The request was not processed; send it again",
        )
    odd = odd_answer(fault, parts.number)
    if odd is not None:
        return odd
    call = state.accept_call(
        body,
        {k.lower(): v for k, v in request.headers.items()},
        client_id,
        authorization,
        user=parts.user,
        number=parts.number,
    )
    if faults.call_latency_s:
        await asyncio.sleep(faults.call_latency_s)
    if fault == "hang":
        await asyncio.sleep(faults.hang_s)
    if fault == "drop_after":
        return drop(request)
    return web.json_response(
        {"id": call["id"], "selfUri": f"/api/v2/conversations/calls/{call['id']}"}, status=201
    )


def _raw_json(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json")


def _throttled(retry_after: str) -> web.Response:
    return error(
        429,
        "too.many.requests.retry.after",
        f"Retry the request in [{retry_after}] seconds",
        headers={"Retry-After": retry_after},
        params={"retryAfter": retry_after},
    )


def _asked(request: web.Request, endpoint: str, user: str | None) -> Token | web.Response:
    """A question (availability, analytics): logged with its answer in /_sim/queries; the
    token, or the answer to give instead (401, the per-token limit, a scripted fault)."""
    state = request.app[STATE_KEY]
    entry: dict[str, Any] = {"endpoint": endpoint, "user": user, "status": 0, "at": time.time()}
    state.queries.append(entry)
    response = _gate(request, state, endpoint)
    entry["status"] = response.status if isinstance(response, web.Response) else 200
    return response


def _gate(request: web.Request, state: SimState, endpoint: str) -> Token | web.Response:
    token = _bearer(request)
    if token is None:
        return error(401, "authentication.required", "Authentication failed")
    faults = state.faults
    if faults.token_over_the_limit(request.headers["Authorization"], time.monotonic()):
        return _throttled("1")
    script = faults.availability_script if endpoint == "availability" else faults.analytics_script
    fault = script.popleft() if script else None
    if fault == "429":
        return _throttled(faults.retry_after)
    if fault == "deep":
        return _raw_json(deep_json())
    if fault == "odd_shape":  # valid JSON, not the shape the contract gives
        odd: dict[str, Any] = (
            {"conversations": 5} if endpoint == "analytics" else {"conversationSummary": []}
        )
        return web.json_response(odd)
    if fault not in (None, "ok", "200"):
        return error(int(fault), "service.unavailable", "Service temporarily unavailable")
    return token


async def genesys_user(request: web.Request) -> web.Response:
    """GET /api/v2/users/{userId}?expand=conversationSummary: calls in progress."""
    state = request.app[STATE_KEY]
    user = request.match_info["user_id"]
    asked = _asked(request, "availability", user)
    if isinstance(asked, web.Response):
        return asked
    if state.users is not None and user not in state.users:
        return error(404, "not.found", f"User '{user}' was not found")
    active = 1 if state.faults.busy_until.get(user, 0) > time.time() else 0
    summary = {"contactCenter": {"active": active, "acw": 0}, "enterprise": {"active": 0}}
    body: dict[str, Any] = {"id": user, "name": user, "state": "active"}
    if "conversationSummary" in request.query.get("expand", ""):
        body["conversationSummary"] = {"call": summary}
    return web.json_response(body)


ANALYTICS_PAGE_SIZE = 100  # the platform's default page; at most ANALYTICS_MAX_PAGE_SIZE
ANALYTICS_MAX_PAGE_SIZE = 100


async def genesys_analytics(request: web.Request) -> web.Response:
    """POST /api/v2/analytics/conversations/details/query: the calls it accepted, as
    analytics shows them once the lag has passed (dimensions userId and dnis, the interval,
    paging), each with its customer participant's attributes."""
    state = request.app[STATE_KEY]
    try:
        query = json.loads(await request.read())
        start, end = (
            datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()
            for t in query["interval"].split("/")
        )
        predicates = {
            p["dimension"]: p["value"]
            for f in query.get("segmentFilters", [])
            for p in f.get("predicates", [])
        }
        paging = query.get("paging") or {}
        size = int(paging.get("pageSize", ANALYTICS_PAGE_SIZE))
        page = int(paging.get("pageNumber", 1))
    except (ValueError, KeyError, TypeError, AttributeError):
        return invalid("The query is not a conversation details query")
    if not 1 <= size <= ANALYTICS_MAX_PAGE_SIZE or page < 1:
        return invalid(f"paging.pageSize must be 1-{ANALYTICS_MAX_PAGE_SIZE}")
    asked = _asked(request, "analytics", predicates.get("userId"))
    if isinstance(asked, web.Response):
        return asked
    if contracts.ANALYTICS_PERMISSION not in asked.scopes:
        return error(
            403, "missing.permissions", f"Missing permission: {contracts.ANALYTICS_PERMISSION}"
        )
    now = time.time()
    calls = state.calls + _padding(state, start, predicates.get("userId"))
    found = [
        _as_analytics(call)
        for call in sorted(calls, key=lambda c: c["received_at"])
        if start <= call["received_at"] < end
        and call["received_at"] + state.faults.analytics_lag_s <= now
        and predicates.get("userId", call["user_id"]) == call["user_id"]
        and predicates.get("dnis", f"tel:{call['number']}") == f"tel:{call['number']}"
    ]
    shown = found[(page - 1) * size : page * size]
    return web.json_response({"conversations": shown, "totalHits": len(found)})


def _padding(state: SimState, start: float, user: str | None) -> list[dict[str, Any]]:
    """analytics_padding: the agent's other calls in the interval (other numbers), each a
    detail record of a few KB, as a busy agent's day has them."""
    return [
        {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"padding-{n}")),
            "received_at": start + 0.001 * n,
            "user_id": user or "u-other",
            "number": f"+6129{n:07d}",
            "body": {"attributes": {f"note{k}": "x" * 200 for k in range(20)}},
        }
        for n in range(state.faults.analytics_padding)
    ]


def _as_analytics(call: dict[str, Any]) -> dict[str, Any]:
    started = datetime.fromtimestamp(call["received_at"], UTC).isoformat().replace("+00:00", "Z")
    dnis = f"tel:{call['number']}"
    body = call.get("body")
    attributes = body.get("attributes") if isinstance(body, dict) else None
    customer: dict[str, Any] = {
        "purpose": "external",
        "sessions": [{"mediaType": "voice", "dnis": dnis}],
    }
    if isinstance(attributes, dict) and attributes:
        customer["attributes"] = attributes  # where CreateCallRequest's attributes are kept
    return {
        "conversationId": call["id"],
        "conversationStart": started,
        "originatingDirection": "outbound",
        "participants": [
            {
                "purpose": "agent",
                "userId": call["user_id"],
                "sessions": [{"mediaType": "voice", "direction": "outbound", "dnis": dnis}],
            },
            customer,
        ],
    }


def _bearer(request: web.Request) -> Token | None:
    authorization = request.headers.get("Authorization", "")
    if not authorization.startswith("Bearer "):
        return None
    return request.app[STATE_KEY].token_for(authorization.removeprefix("Bearer "))


async def genesys_calls_without_user(request: web.Request) -> web.Response:
    """Genesys: POST /api/v2/conversations/calls acts for the token's user, and a
    client-credentials token has none."""
    return error(
        400,
        "bad.request",
        "No user context: a client-credentials token must place calls with "
        "POST /api/v2/conversations/calls/user/{userId}",
    )


async def campaign_call(request: web.Request) -> web.Response:
    try:
        body = json.loads(await request.read())
    except ValueError:
        body = {}
    if isinstance(body, dict) and "callType" in body:
        return invalid("Field 'callType' is not valid for this endpoint")
    return invalid("Personal Connection calls are placed with POST /api/v2/conversations/calls")


async def list_calls(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    if state.show_secrets:
        return web.json_response(state.calls)
    return web.json_response([_masked(call) for call in state.calls])


def _masked(call: dict[str, Any]) -> dict[str, Any]:
    """A call as /_sim/calls shows it by default: no bearer token, every number masked (as
    followup's own logs mask it)."""
    shown = _mask_strings(call)
    if shown.get("authorization"):
        shown["authorization"] = "Bearer <hidden>"
    shown["id"] = call["id"]  # an id, never a number: a cxone contactId is digits
    return dict(shown)


def _mask_strings(value: Any) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {mask_text(str(key)): _mask_strings(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_mask_strings(item) for item in value]
    return value


async def list_requests(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    return web.json_response(
        state.requests if state.show_secrets else _mask_strings(state.requests)
    )


async def list_queries(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    return web.json_response(state.queries if state.show_secrets else _mask_strings(state.queries))


async def list_tokens(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    issued: dict[str, int] = {}
    for token in state.tokens.values():
        issued[token.client_id] = issued.get(token.client_id, 0) + 1
    tokens = {v: t.client_id for v, t in state.tokens.items()} if state.show_secrets else {}
    return web.json_response(
        {
            "tokens": tokens,
            "issued": issued,
            "token_requests": state.token_requests,
            "discovery_requests": state.discovery_requests,
        }
    )


async def set_faults(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    spec = await request.json()
    kinds = tuple(spec.get("kinds", ["503"]))
    by_contact = {c: deque(s) for c, s in spec.get("by_contact", {}).items()}
    by_number = {n: deque(s) for n, s in spec.get("by_number", {}).items()}
    scripted = [
        k for s in (spec.get("script", []), *by_contact.values(), *by_number.values()) for k in s
    ]
    cxone = state.dialect == "cxone"
    call_kinds = (*FAULT_KINDS, *(CXONE_FAULT_KINDS if cxone else ()), "ok", "200")
    token_kinds = (*TOKEN_FAULT_KINDS, *(CXONE_TOKEN_FAULT_KINDS if cxone else ()), "ok", "200")
    bad = [k for k in (*kinds, *scripted) if k not in call_kinds]
    bad += [k for k in spec.get("token_script", []) if k not in token_kinds]
    bad += [k for k in spec.get("discovery_script", []) if k not in (*DISCOVERY_FAULT_KINDS, "ok")]
    query_kinds = (*QUERY_FAULT_KINDS, *(CXONE_QUERY_FAULT_KINDS if cxone else ()), "ok", "200")
    bad += [
        k
        for k in (*spec.get("availability_script", []), *spec.get("analytics_script", []))
        if k not in query_kinds
    ]
    if bad:
        return web.json_response(
            {
                "error": f"unknown fault kinds {bad}; use {call_kinds} ({token_kinds} for the "
                f"token endpoint, {DISCOVERY_FAULT_KINDS} for cxone's discovery)"
            },
            status=400,
        )
    state.faults = Faults(
        script=deque(spec.get("script", [])),
        by_contact=by_contact,
        by_number=by_number,
        token_script=deque(spec.get("token_script", [])),
        discovery_script=deque(spec.get("discovery_script", [])),
        availability_script=deque(spec.get("availability_script", [])),
        analytics_script=deque(spec.get("analytics_script", [])),
        analytics_padding=int(spec.get("analytics_padding", 0)),
        token_rate_limit=float(spec.get("token_rate_limit", 0.0)),
        rate=float(spec.get("rate", 0.0)),
        kinds=kinds,
        call_latency_s=float(spec.get("call_latency_s", 0.0)),
        token_latency_s=float(spec.get("token_latency_s", 0.0)),
        retry_after=str(spec.get("retry_after", "1")),
        hang_s=float(spec.get("hang_s", 30.0)),
        rng=random.Random(spec.get("seed")),
        rate_limit=float(spec.get("rate_limit", 0.0)),
        analytics_lag_s=float(spec.get("analytics_lag_s", 0.0)),
        busy_until={u: time.time() + float(s) for u, s in spec.get("busy_users", {}).items()},
        rate_window_s=float(spec.get("rate_window_s", 1.0)),
        agent_states=dict(spec.get("agent_states", {})),
        contact_active_s=float(spec.get("contact_active_s", 60.0)),
    )
    return web.json_response({"ok": True})


async def expire_tokens(request: web.Request) -> web.Response:
    request.app[STATE_KEY].tokens.clear()
    return web.json_response({"ok": True})


async def reset(request: web.Request) -> web.Response:
    request.app[STATE_KEY].reset()
    return web.json_response({"ok": True})


def make_app(state: SimState) -> web.Application:
    app = web.Application()
    app[STATE_KEY] = state
    if state.dialect == "cxone":
        platform = cxone.routes()
    elif state.dialect == "genesys":
        platform = [
            web.post("/oauth/token", token_endpoint),
            web.post("/api/v2/conversations/calls/user/{user_id}", create_call),
            web.post("/api/v2/conversations/calls", genesys_calls_without_user),
            web.get("/api/v2/users/{user_id}", genesys_user),
            web.post("/api/v2/analytics/conversations/details/query", genesys_analytics),
            web.post("/api/v2/outbound/campaigns/{campaign_id}/calls", campaign_call),
        ]
    else:
        platform = [
            web.post("/oauth/token", token_endpoint),
            web.post("/api/v2/conversations/calls", create_call),
            web.post("/api/v2/outbound/campaigns/{campaign_id}/calls", campaign_call),
        ]
    app.add_routes(
        [
            *platform,
            web.get("/_sim/calls", list_calls),
            web.get("/_sim/queries", list_queries),
            web.get("/_sim/requests", list_requests),
            web.get("/_sim/tokens", list_tokens),
            web.post("/_sim/faults", set_faults),
            web.post("/_sim/expire-tokens", expire_tokens),
            web.post("/_sim/reset", reset),
        ]
    )
    return app


def serve(state: SimState, host: str, port: int) -> None:
    """Run until interrupted. aiohttp sets TCP_NODELAY and answers in one write."""
    web.run_app(
        make_app(state), host=host, port=port, access_log=None, print=None, handle_signals=True
    )
