"""Genesys Cloud (worker.platforms.genesys): how a lookup reads analytics answers of every
shape (a unit test of the reader: the answers come from httpx's MockTransport; the
end-to-end cases are in test_reconcile)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from followup.config.settings import load_settings
from followup.worker.http import PlatformHttp
from followup.worker.platforms.base import NoAnswer
from followup.worker.platforms.genesys.client import GenesysPlatform

SENT_AT = 1_800_000_000.0  # 2027-01-15T08:00:00Z
NUMBER = "+61298765432"
BASE = "http://platform.test"


def conversation(request_id: str = "r-1", **changes: Any) -> dict[str, Any]:
    c: dict[str, Any] = {
        "conversationId": "conv-1",
        "conversationStart": "2027-01-15T08:00:01.000Z",
        "participants": [
            {"purpose": "agent", "userId": "u-1", "sessions": [{"dnis": f"tel:{NUMBER}"}]},
            {
                "purpose": "external",
                "attributes": {"followup_request_id": request_id},
                "sessions": [{"dnis": f"tel:{NUMBER}"}],
            },
        ],
    }
    c.update(changes)
    return c


def answering(body: Any, status: int = 200) -> GenesysPlatform:
    http = PlatformHttp(timeout_s=5, keepalive_s=0, max_connections=1)
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    http.client = httpx.Client(
        transport=httpx.MockTransport(lambda _: httpx.Response(status, content=raw))
    )
    return GenesysPlatform(load_settings({"FOLLOWUP_API_DIALECT": "genesys"}), http)


def find(body: Any, status: int = 200) -> str | None:
    return answering(body, status).find_call(BASE, "r-1", "u-1", NUMBER, SENT_AT, "token")


def test_only_the_call_sent_for_this_request_is_ours() -> None:
    assert find({"conversations": [conversation()]}) == "conv-1"
    assert find({"conversations": [conversation("r-other")]}) is None
    no_attributes = conversation()
    del no_attributes["participants"][1]["attributes"]
    assert find({"conversations": [no_attributes]}) is None


def test_a_call_that_started_before_the_send_marker_is_not_ours() -> None:
    early = conversation(conversationStart="2027-01-15T07:59:00.000Z")
    assert find({"conversations": [early]}) is None


@pytest.mark.parametrize(
    "body",
    [
        {"conversations": [conversation(participants=[{"userId": ["u-1"]}])]},
        {"conversations": [conversation(participants={"userId": "u-1"})]},
        {"conversations": [conversation(conversationStart=5)]},
        {"conversations": [5, "x", None]},
        {"conversations": [conversation(participants=[{"attributes": ["r-1"]}])]},
        {
            "conversations": [
                conversation(participants=[{"attributes": {"followup_request_id": ["r-1"]}}])
            ]
        },
    ],
)
def test_odd_conversations_are_not_ours_and_raise_nothing(body: Any) -> None:
    assert find(body) is None


DEEP = b"[" * 5000 + b"]" * 5000  # json.loads alone raises RecursionError on it


@pytest.mark.parametrize(
    "body", [{"conversations": 5}, [], "text", b"<html>", DEEP, b'{"conversations": ' + DEEP + b"}"]
)
def test_an_answer_of_another_shape_is_no_answer(body: Any) -> None:
    with pytest.raises(NoAnswer):
        find(body)


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 401])
def test_throttles_and_outages_are_no_answer(status: int) -> None:
    with pytest.raises(NoAnswer) as caught:
        find({"conversations": []}, status)
    assert caught.value.throttled == (status == 429)
    assert caught.value.reauth == (status == 401)


def test_an_answer_over_64_kib_is_read_whole() -> None:
    padding = [
        conversation(f"r-other-{n}", conversationId=f"other-{n}", notes="y" * 4000)
        for n in range(30)
    ]
    body = {"conversations": [*padding, conversation()]}
    assert len(json.dumps(body)) > 64 * 1024
    assert find(body) == "conv-1"


def test_an_availability_answer_of_another_shape_cannot_say() -> None:
    assert answering({"conversationSummary": []}).agent_busy(BASE, "u-1", "token") is None
    odd = {"conversationSummary": {"call": {"contactCenter": {"active": True}}}}
    assert answering(odd).agent_busy(BASE, "u-1", "token") is None
    with pytest.raises(NoAnswer):
        answering({}, 503).agent_busy(BASE, "u-1", "token")


def test_one_odd_conversation_does_not_hide_the_call_after_it() -> None:
    """An attribute that is a list (unhashable) in one entry: the entry is skipped, the page
    is still read."""
    odd = conversation(conversationId="conv-odd")
    odd["participants"][1]["attributes"]["followup_request_id"] = ["x"]
    assert find({"conversations": [odd, conversation()]}) == "conv-1"


@pytest.mark.parametrize("body", [DEEP, b'{"conversationSummary": ' + DEEP + b"}"])
def test_an_availability_answer_nested_too_deep_cannot_say(body: bytes) -> None:
    assert answering(body).agent_busy(BASE, "u-1", "token") is None
