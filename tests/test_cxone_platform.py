"""NICE CXone (worker.platforms.cxone), read in units: the token grant, the JWT's tenantId,
the callback's query string, CXone's answers and error text (answers from httpx's
MockTransport; the end-to-end cases run against the simulator in test_cxone)."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from followup.config.settings import ConfigError, load_settings
from followup.tasks.request import FollowUpRequest
from followup.worker.http import Answer, PlatformHttp
from followup.worker.platforms.cxone.client import CxonePlatform, tenant_of, usable_endpoint

CXONE = {
    "FOLLOWUP_API_DIALECT": "cxone",
    "FOLLOWUP_CXONE_SKILL_ID": "4242",
    "FOLLOWUP_CXONE_ACCESS_KEY_ID": "key-id",
    "FOLLOWUP_CXONE_ACCESS_KEY_SECRET": "key-secret-9z",
    "FOLLOWUP_CLIENT_ID": "app",
    "FOLLOWUP_CLIENT_SECRET": "app-secret",
}
REQUEST = FollowUpRequest(
    contact_id="c-1", user_id="1001", phone_number="+14155550123", metadata={"ticket": "T-1"}
)


def platform(**settings: str) -> CxonePlatform:
    http = PlatformHttp(timeout_s=1, keepalive_s=0, max_connections=1)
    return CxonePlatform(load_settings({**CXONE, **settings}), http)


def jwt(claims: dict[str, Any]) -> str:
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"eyJhbGciOiJIUzI1NiJ9.{body}.c2ln"


def answer(status: int, body: bytes = b"", **headers: str) -> Answer:
    return Answer(status, httpx.Headers(headers), body)


def test_the_token_is_a_password_grant_with_the_application_as_basic() -> None:
    grant = platform().token_request()
    assert grant.url == "https://cxone.niceincontact.com/auth/token"
    assert grant.form == {
        "grant_type": "password",
        "username": "key-id",
        "password": "key-secret-9z",
    }
    assert grant.auth == ("app", "app-secret")
    assert "key-secret-9z" not in repr(grant) and "app-secret" not in repr(grant)


def test_the_tenant_comes_from_the_jwt() -> None:
    assert tenant_of(jwt({"tenantId": "11EB-T"})) == "11EB-T"
    assert tenant_of(jwt({"sub": "x"})) is None
    assert tenant_of("opaque-token") is None


def test_the_callback_goes_in_the_query_string_only() -> None:
    call = platform().call_request(REQUEST, "r-1")
    assert (call.method, call.path, call.json) == ("POST", "/queuecallback", None)
    assert call.params == {"phoneNumber": "+14155550123", "skill": "4242", "targetAgent": "1001"}
    with_caller = platform(FOLLOWUP_CXONE_CALLER_ID="+14155550100").call_request(REQUEST, "r-1")
    assert (with_caller.params or {})["callerID"] == "+14155550100"
    assert platform(FOLLOWUP_CXONE_PHONE_FORMAT="digits").dialled("+14155550123") == "14155550123"
    assert platform(FOLLOWUP_CXONE_PHONE_FORMAT="national").dialled("+14155550123") == "4155550123"


def test_a_202_is_placed_with_or_without_a_contact_id() -> None:
    p = platform()
    assert p.read_answer(answer(202)).kind == "placed"
    assert p.read_answer(answer(202)).conversation_id is None
    assert p.read_answer(answer(202, b'{"contactId": 7734}')).conversation_id == "7734"


@pytest.mark.parametrize(
    ("reply", "kind", "text"),
    [
        (
            answer(400, b'{"error": "InvalidSkillId", "error_description": "Invalid skill."}'),
            "fail",
            "Invalid skill.",
        ),
        (
            answer(400, b"", icStatusDescription="Phone Number is not valid."),
            "fail",
            "Phone Number is not valid.",
        ),
        (answer(404, b'{"message": "Invalid Agent Id"}'), "fail", "Invalid Agent Id"),
        (answer(429, b'{"error": "Too Many Requests"}'), "retry", "Too Many Requests"),
        (
            answer(503, b"", icStatusDescription="Service Unavailable"),
            "retry",
            "Service Unavailable",
        ),
        (answer(401, b""), "reauth", "HTTP 401"),
    ],
)
def test_errors_read_as_cxone_writes_them(reply: Answer, kind: str, text: str) -> None:
    verdict = platform().read_answer(reply)
    assert verdict.kind == kind
    assert verdict.error is not None and verdict.error.message == text


def test_a_403_names_the_api_user_and_the_permission() -> None:
    verdict = platform().read_answer(answer(403, b'{"message": "Forbidden"}'))
    assert verdict.kind == "fail"
    assert verdict.error is not None
    assert "FOLLOWUP_CXONE_ACCESS_KEY_ID" in verdict.error.message
    assert "create callbacks" in verdict.error.message


def test_a_cxone_worker_needs_its_skill_and_its_access_key() -> None:
    with pytest.raises(ConfigError, match="FOLLOWUP_CXONE_SKILL_ID"):
        load_settings({**CXONE, "FOLLOWUP_CXONE_SKILL_ID": ""})
    with pytest.raises(ConfigError, match="FOLLOWUP_CXONE_SKILL_ID"):
        load_settings({**CXONE, "FOLLOWUP_CXONE_SKILL_ID": "skill-1"})
    keyless = {k: v for k, v in CXONE.items() if "ACCESS_KEY" not in k}
    with pytest.raises(ConfigError, match="FOLLOWUP_CXONE_ACCESS_KEY_ID"):
        platform_without = CxonePlatform(
            load_settings(keyless), PlatformHttp(timeout_s=1, keepalive_s=0, max_connections=1)
        )
        platform_without.token_request()
    with pytest.raises(ConfigError, match="apply to NICE CXone only"):
        load_settings({"FOLLOWUP_CXONE_SKILL_ID": "4242"})


DEEP = b"[" * 5000 + b"]" * 5000  # json.loads alone raises RecursionError on it


def test_answers_nested_too_deep_are_no_usable_answer() -> None:
    p = platform()
    assert p.read_answer(answer(202, b'{"contactId": ' + DEEP + b"}")).conversation_id is None
    refused = p.read_answer(answer(400, b'{"error": ' + DEEP + b"}"))
    assert refused.kind == "fail"
    assert refused.error is not None and refused.error.message == "HTTP 400"
    deep_jwt = "x." + base64.urlsafe_b64encode(DEEP).decode().rstrip("=") + ".c2ln"
    assert tenant_of(deep_jwt) is None


@pytest.mark.parametrize("status", [200, 201, 204])
def test_only_a_202_is_placed_any_other_2xx_is_unknown(status: int) -> None:
    verdict = platform().read_answer(answer(status, b"<html>ok</html>"))
    assert verdict.kind == "unknown" and verdict.conversation_id is None
    assert verdict.error is not None and "202" in verdict.error.message


@pytest.mark.parametrize("retry_after", [None, "1"])
@pytest.mark.parametrize("status", [429, 503])
def test_429_and_503_are_throttles_with_or_without_retry_after(
    status: int, retry_after: str | None
) -> None:
    headers = {"retry-after": retry_after} if retry_after else {}
    verdict = platform().read_answer(answer(status, b"", **headers))
    assert verdict.kind == "retry" and verdict.throttled
    assert not verdict.spends and verdict.health == ""


@pytest.mark.parametrize(
    ("url", "usable"),
    [
        ("https://api-na1.niceincontact.com", True),
        ("https://api-na1.niceincontact.com/", True),
        ("http://127.0.0.1:8080", True),
        ("http://localhost:8080", True),
        ("http://api-na1.niceincontact.com", False),
        ("https://user:pw@api-na1.niceincontact.com", False),
        ("https://evil@api-na1.niceincontact.com", False),
        ("https://api-na1.niceincontact.com?x=1", False),
        ("https://api-na1.niceincontact.com/#frag", False),
        ("ftp://api-na1.niceincontact.com", False),
        ("https://", False),
        ("https://[::1", False),
    ],
)
def test_a_discovered_endpoint_must_be_a_plain_https_url(url: str, usable: bool) -> None:
    assert usable_endpoint(url) is usable
