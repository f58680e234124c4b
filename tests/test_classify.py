"""The §3 table of api-contract.md: what each answer means for the next step."""

from __future__ import annotations

import email.utils
import time

import httpx
import pytest
import respx

from followup.worker.classify import classify_exception, classify_response, retry_after

URL = "https://api.example.test/api/v2/conversations/calls"
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
    status: int, json: object = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    with respx.mock:
        respx.post(URL).respond(status, json=json, headers=headers)
        return httpx.post(URL, json={})


def test_2xx_is_placed_with_the_conversation_id() -> None:
    verdict = classify_response(answer(201, {"id": "conv-1", "selfUri": "/x"}))
    assert (verdict.kind, verdict.conversation_id) == ("placed", "conv-1")


@pytest.mark.parametrize("status", [400, 404, 409, 422])
def test_permanent_errors_fail_and_keep_the_error_body(status: int) -> None:
    verdict = classify_response(answer(status, {**ERROR_BODY, "status": status}))
    assert verdict.kind == "fail"
    assert verdict.error is not None
    assert verdict.error.status == status
    assert verdict.error.code == "bad.request"
    assert verdict.error.errors == [
        {"message": "Field 'callType' is not valid for this endpoint", "code": "invalid.parameter"}
    ]
    assert verdict.error.context_id == "ctx-1"


@pytest.mark.parametrize("status", [500, 502, 504])
def test_server_errors_retry_with_backoff(status: int) -> None:
    verdict = classify_response(answer(status, {"message": "boom", "code": "internal"}))
    assert (verdict.kind, verdict.retry_after_s) == ("retry", None)


@pytest.mark.parametrize("status", [429, 503])
def test_throttling_retries_no_sooner_than_retry_after(status: int) -> None:
    verdict = classify_response(answer(status, {"code": "too.many.requests"}, {"Retry-After": "7"}))
    assert (verdict.kind, verdict.retry_after_s) == ("retry", 7.0)


def test_retry_after_as_http_date() -> None:
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    seconds = retry_after(answer(429, {}, {"Retry-After": when}))
    assert seconds is not None
    assert 100 < seconds <= 120


def test_401_asks_for_a_new_token() -> None:
    assert classify_response(answer(401, {"code": "authentication.required"})).kind == "reauth"


def test_403_fails_and_names_the_missing_scope() -> None:
    verdict = classify_response(answer(403, {"message": "Missing permission", "code": "forbidden"}))
    assert verdict.kind == "fail"
    assert verdict.error is not None
    assert "conversation:write" in verdict.error.message


def test_non_json_error_body_is_kept_as_text_with_numbers_masked() -> None:
    with respx.mock:
        respx.post(URL).respond(502, text="upstream said no for +61298765432")
        response = httpx.post(URL, json={})
    verdict = classify_response(response)
    assert verdict.error is not None
    assert verdict.error.code == "http.502"
    assert "+61298765432" not in verdict.error.message


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
