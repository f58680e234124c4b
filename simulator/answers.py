"""What every dialect of the simulator answers with: the platform's error body, Basic
authentication, the misbehaving answers of FAULT_KINDS, a dropped connection, and the key under
which the app keeps its state. server.py and cxone.py both build on these."""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import phonenumbers
from aiohttp import web

from followup.simulator.state import SimState, deep_json

STATE_KEY = web.AppKey("state", SimState)


def error(
    status: int,
    code: str,
    message: str,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> web.Response:
    """The platform's ErrorBody; its contextId also as the ININ-Correlation-Id header."""
    context_id = str(uuid.uuid4())
    body = {
        "message": message,
        "status": status,
        "code": code,
        "contextId": context_id,
        "details": [],
        "errors": errors or [],
    }
    if params:
        body["messageParams"] = params
        body["messageWithParams"] = message
    headers = {**(headers or {}), "ININ-Correlation-Id": context_id}
    return web.json_response(body, status=status, headers=headers)


def basic_auth(header: str) -> tuple[str | None, str | None]:
    if not header.startswith("Basic "):
        return None, None
    try:
        decoded = base64.b64decode(header[6:], validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    client_id, _, secret = decoded.partition(":")
    return client_id, secret


def odd_answer(fault: str | None, number: str) -> web.Response | None:
    """The misbehaving answers of FAULT_KINDS; none of them creates a conversation."""
    if fault == "204":
        return web.Response(status=204)
    if fault == "201_empty":
        return web.Response(status=201)
    if fault == "201_no_id":
        return web.json_response({"selfUri": "/api/v2/conversations/calls/"}, status=201)
    if fault == "201_deep":
        body = b'{"id": ' + deep_json() + b"}"
        return web.Response(body=body, status=201, content_type="application/json")
    if fault == "200_html":
        return web.Response(text="<html><body>Welcome!</body></html>", content_type="text/html")
    if fault in ("huge_400", "many_errors_400"):
        huge = fault == "huge_400"
        errors = [{"message": f"problem {n}", "code": "x"} for n in range(10_000 if huge else 1000)]
        return error(400, "bad.request", "x" * 10_000_000 if huge else "Invalid", errors)
    if fault == "echo_number":
        parsed = phonenumbers.parse(number)
        formats = [
            phonenumbers.format_number(parsed, f)
            for f in (
                phonenumbers.PhoneNumberFormat.INTERNATIONAL,
                phonenumbers.PhoneNumberFormat.NATIONAL,
                phonenumbers.PhoneNumberFormat.RFC3966,
            )
        ]
        formats.append(number.replace("+", "%2B"))
        return error(
            400,
            f"callee.{number}.unreachable",
            f"The callee {' / '.join(formats)} cannot be reached",
            [{"message": f"no route to {number[1:]}", "code": f"number.{number}"}],
        )
    return None


def drop(request: web.Request) -> web.StreamResponse:
    if request.transport is not None:
        request.transport.close()
    raise asyncio.CancelledError


async def logged(
    request: web.Request,
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    **fields: Any,
) -> web.StreamResponse:
    """Log a create-call request in /_sim/requests and the status it got (0: the connection
    was dropped), around the dialect's handler."""
    entry: dict[str, Any] = {
        "correlation_id": request.headers.get("ININ-Correlation-Id"),
        **fields,
        "status": 0,
        "at": time.time(),
    }
    request.app[STATE_KEY].requests.append(entry)
    response = await handler(request)
    entry["status"] = response.status
    return response
