"""The §3 table of api-contract.md, and odd answers: what each means for the next step."""

from __future__ import annotations

import email.utils
import json
import time

import httpx
import pytest

from followup.worker.classify import (
    MESSAGE_CHARS,
    Verdict,
    classify_answer,
    classify_exception,
    retry_after,
)
from followup.worker.http import Answer
from followup.worker.platforms.conversations.client import ConversationsPlatform

CAP = 300.0
ERROR_BODY = {
    "message": "Invalid request body",
    "status": 400,
    "code": "bad.request",
    "contextId": "ctx-1",
    "details": [],
    "errors": [
        {"message": "Field 'callType' is not valid for this endpoint", "code": "invalid.parameter"}
    ],
}


def answer(
    status: int, body: object = None, headers: dict[str, str] | None = None, raw: bytes = b""
) -> Answer:
    content = raw if body is None else json.dumps(body).encode()
    return Answer(status, httpx.Headers(headers or {}), content)


def classify(reply: Answer) -> Verdict:
    """The conversations dialect's reading (both dialects read answers alike)."""
    return classify_answer(
        reply, forbidden_hint=ConversationsPlatform.forbidden_hint, max_retry_after_s=CAP
    )


def test_2xx_is_placed_with_the_conversation_id() -> None:
    verdict = classify(answer(201, {"id": "conv-1", "selfUri": "/x"}))
    assert (verdict.kind, verdict.conversation_id) == ("placed", "conv-1")


@pytest.mark.parametrize(
    ("status", "raw"),
    [
        (204, b""),
        (201, b""),
        (200, b"<html><body>Welcome to nginx!</body></html>"),
        (201, json.dumps({"selfUri": "/api/v2/conversations/calls/x"}).encode()),
        (201, json.dumps({"id": 12345}).encode()),
        (201, json.dumps({"id": ""}).encode()),
        (201, b'{"id": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
    ],
)
def test_a_2xx_without_a_string_id_is_unknown_not_placed(status: int, raw: bytes) -> None:
    verdict = classify(answer(status, raw=raw))
    assert verdict.kind == "unknown"
    assert verdict.error is not None
    assert verdict.error.code == "response.no_id"
    assert verdict.error.status == status
    assert raw[:20].decode() in verdict.error.message


@pytest.mark.parametrize("status", [400, 404, 409, 422])
def test_permanent_errors_fail_and_keep_the_error_body(status: int) -> None:
    verdict = classify(answer(status, {**ERROR_BODY, "status": status}))
    assert verdict.kind == "fail"
    assert verdict.error is not None
    assert verdict.error.status == status
    assert verdict.error.code == "bad.request"
    assert verdict.error.errors == [
        {"message": "Field 'callType' is not valid for this endpoint", "code": "invalid.parameter"}
    ]
    assert verdict.error.context_id == "ctx-1"


@pytest.mark.parametrize("status", [408, 425, 500, 502, 504])
def test_not_processed_and_server_errors_retry_with_backoff(status: int) -> None:
    verdict = classify(answer(status, {"message": "boom", "code": "x"}))
    assert (verdict.kind, verdict.retry_after_s) == ("retry", None)


@pytest.mark.parametrize("status", [429, 503])
def test_throttling_retries_no_sooner_than_retry_after(status: int) -> None:
    verdict = classify(answer(status, {"code": "too.many.requests"}, {"Retry-After": "7"}))
    assert (verdict.kind, verdict.retry_after_s) == ("retry", 7.0)


def test_retry_after_as_http_date() -> None:
    waited, asked = retry_after(email.utils.formatdate(time.time() + 120, usegmt=True), CAP)
    assert waited is not None and asked is not None
    assert 100 < waited <= 120


@pytest.mark.parametrize(
    ("value", "waited"),
    [
        ("999999999", CAP),  # years: the cap holds the fleet back at most this long
        ("12345678901234567890", None),  # more digits than any delay: not a Retry-After
        ("²", None),  # str.isdigit() says yes; it is not delay-seconds
        ("-5", None),
        ("1.5", None),
        (" 42 ", 42.0),
        pytest.param(
            email.utils.formatdate(time.time() + 86400 * 365, usegmt=True), CAP, id="a-year-on"
        ),
        ("Wed, 32 Foo 2026 99:99:99 GMT", None),
    ],
)
def test_retry_after_is_parsed_strictly_and_capped(value: str, waited: float | None) -> None:
    assert retry_after(value, CAP)[0] == waited


def test_a_capped_retry_after_keeps_what_was_asked_for_the_log() -> None:
    verdict = classify(answer(429, {}, {"Retry-After": "999999999"}))
    assert (verdict.retry_after_s, verdict.retry_after_asked_s) == (CAP, 999999999.0)


def test_401_asks_for_a_new_token() -> None:
    verdict = classify(answer(401, {"code": "authentication.required"}))
    assert verdict.kind == "reauth"


def test_403_fails_and_names_the_missing_scope() -> None:
    verdict = classify(answer(403, {"message": "Missing permission", "code": "forbidden"}))
    assert verdict.kind == "fail"
    assert verdict.error is not None
    assert "conversation:write" in verdict.error.message


def test_error_bodies_are_bounded_whatever_the_platform_sends() -> None:
    body = {
        "message": "x" * 10_000_000,
        "code": "y" * 100_000,
        "errors": [{"message": "z" * 1000, "code": "c"} for _ in range(10_000)],
    }
    verdict = classify(answer(400, body))
    assert verdict.error is not None
    assert len(verdict.error.message) <= MESSAGE_CHARS
    assert len(verdict.error.code) <= 80
    assert len(verdict.error.errors) == 11  # ten, and a line saying how many more
    assert verdict.error.errors[-1]["message"] == "and 9990 more"
    assert all(len(e["message"]) <= MESSAGE_CHARS for e in verdict.error.errors)


def test_numbers_in_error_codes_and_text_bodies_are_masked() -> None:
    coded = classify(answer(400, {"message": "bad", "code": "bad.number.+61298765432"}))
    assert coded.error is not None and "98765432" not in coded.error.code
    text = classify(answer(502, raw=b"upstream said no for +61298765432"))
    assert text.error is not None
    assert text.error.code == "http.502"
    assert "98765432" not in text.error.message


@pytest.mark.parametrize(
    "exc", [httpx.ConnectError("refused"), httpx.ConnectTimeout("slow"), httpx.PoolTimeout("full")]
)
def test_errors_before_sending_retry(exc: httpx.HTTPError) -> None:
    assert classify_exception(exc).kind == "retry"


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ReadTimeout("slow"),
        httpx.RemoteProtocolError("reset"),
        httpx.ReadError("reset"),
        httpx.WriteError("broken pipe"),
    ],
)
def test_errors_after_the_body_may_have_left_are_unknown_never_retry(exc: httpx.HTTPError) -> None:
    verdict = classify_exception(exc)
    assert verdict.kind == "unknown"
    assert verdict.error is not None
    assert "followup retry" in verdict.error.message


def test_an_exceptions_own_text_is_never_kept() -> None:
    leaky = httpx.LocalProtocolError("Illegal header value b'Bearer tok\\r\\nen-secret'")
    verdict = classify_exception(leaky)
    assert verdict.error is not None
    assert "tok" not in verdict.error.message and "secret" not in verdict.error.message
