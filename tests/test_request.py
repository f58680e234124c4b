"""The request model's validation: normalised numbers, and errors that name the field."""

from __future__ import annotations

import pytest

from followup.config.settings import load_settings
from followup.tasks.request import FollowUpRequest, InvalidRequest, parse_request
from followup.worker.platforms.conversations.client import ConversationsPlatform
from tests.conftest import SEED_PAYLOAD

VALID = {"contact_id": "c-12345", "user_id": "u-67890", "phone_number": "+61 2 9876 5432"}


def errors(data: object) -> dict[str, str]:
    with pytest.raises(InvalidRequest) as caught:
        parse_request(data)
    return {e.field: e.message for e in caught.value.errors}


def test_phone_number_is_normalised_to_e164() -> None:
    assert parse_request(VALID).phone_number == "+61298765432"


@pytest.mark.parametrize("number", ["+612987", "0298765432", "+6129876543299", "call me"])
def test_bad_phone_numbers_are_refused_with_the_fix(number: str) -> None:
    message = errors({**VALID, "phone_number": number})["phone_number"]
    assert "E.164" in message
    assert "+61298765432" in message  # the example of the right form
    assert f"'{number}'" not in message  # the input is echoed masked, never in the clear


def test_the_seed_payload_is_refused_naming_every_field() -> None:
    found = errors(SEED_PAYLOAD)
    assert found["callType"].startswith("unknown field; the allowed fields are contact_id")
    assert found["contact_id"] == "is required"
    assert found["phone_number"] == "is required"


def test_metadata_must_be_small_and_flat() -> None:
    assert (
        "at most 20" in errors({**VALID, "metadata": {f"k{i}": i for i in range(21)}})["metadata"]
    )
    assert errors({**VALID, "metadata": {"k": {"nested": 1}}}) == {
        "metadata": "value of 'k' must be a string, number, boolean or null: metadata is a flat map"
    }
    assert "256" in errors({**VALID, "metadata": {"k": "x" * 300}})["metadata"]


def test_identifiers_are_checked() -> None:
    assert "contact_id" in errors({**VALID, "contact_id": ""})
    assert "user_id" in errors({**VALID, "user_id": "u 1; drop"})


def test_not_an_object() -> None:
    assert errors(["x"]) == {"request": "must be a JSON object, not list"}


def test_the_same_content_has_the_same_digest() -> None:
    a = parse_request({**VALID, "idempotency_key": "k"})
    b = parse_request({**VALID, "phone_number": "+61298765432", "idempotency_key": "k"})
    c = parse_request({**VALID, "reason": "other", "idempotency_key": "k"})
    assert a.digest() == b.digest() != c.digest()


def test_call_body_is_the_contract_and_never_a_campaign_call() -> None:
    platform = ConversationsPlatform(load_settings({}))
    call = platform.call_request(FollowUpRequest.model_validate(VALID), "r-1")
    assert (call.method, call.path, call.params) == ("POST", "/api/v2/conversations/calls", None)
    assert call.json == {
        "from": {"id": "u-67890", "address": "u-67890", "addressType": "user"},
        "to": [{"id": "c-12345", "address": "+61298765432", "addressType": "phone"}],
        "type": "outbound",
        "media": "audio",
    }


@pytest.mark.parametrize(
    "zone", ["localtime", "Factory", "posixrules", "right/UTC", "posix/Europe/Paris", "Mars/Base"]
)
def test_only_real_iana_zones_are_accepted(zone: str) -> None:
    """Files in the zoneinfo tree that load but are no customer's zone (the host's own,
    tzdata's placeholder, the posix/ and right/ copies) are refused, naming the field."""
    assert "not an IANA time zone" in errors({**VALID, "timezone": zone})["timezone"]


def test_iana_zones_and_their_links_are_accepted() -> None:
    for zone in ("Europe/Paris", "America/Los_Angeles", "UTC", "US/Pacific"):
        assert parse_request({**VALID, "timezone": zone}).timezone == zone
