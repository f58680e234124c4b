"""The simulator implements the contract strictly, over real HTTP."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import CLIENT_ID, CLIENT_SECRET, NOSCOPE_ID, SEED_PAYLOAD

GOOD = {
    "from": {"id": "u-67890", "address": "u-67890", "addressType": "user"},
    "to": [{"id": "c-12345", "address": "+61298765432", "addressType": "phone"}],
    "type": "outbound",
    "media": "audio",
}


def token(sim: Any, client_id: str = CLIENT_ID) -> str:
    response = httpx.post(
        f"{sim.url}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(client_id, CLIENT_SECRET),
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    return str(body["access_token"])


def call(sim: Any, body: Any, bearer: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    return httpx.post(f"{sim.url}/api/v2/conversations/calls", json=body, headers=headers)


def test_the_seeds_campaign_request_gets_the_seeds_400(sim: Any) -> None:
    response = httpx.post(
        f"{sim.url}/api/v2/outbound/campaigns/camp-1/calls",
        json=SEED_PAYLOAD,
        headers={"Authorization": f"Bearer {token(sim)}"},
    )
    body = response.json()
    assert response.status_code == 400
    assert (body["message"], body["status"], body["code"]) == (
        "Invalid request body",
        400,
        "bad.request",
    )
    assert body["errors"] == [
        {"message": "Field 'callType' is not valid for this endpoint", "code": "invalid.parameter"}
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"callType": "PERSONAL_CONNECTION"}, "Field 'callType' is not valid for this endpoint"),
        ({"from": {**GOOD["from"], "addressType": "phone"}}, "must be 'user'"),
        ({"to": [{**GOOD["to"][0], "address": "+612987"}]}, "not a valid E.164 number"),
        ({"type": "inbound"}, "Field 'type' must be 'outbound'"),
    ],
)
def test_contract_violations_get_400_with_the_error_body(
    sim: Any, change: dict[str, Any], message: str
) -> None:
    response = call(sim, {**GOOD, **change}, token(sim))
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "bad.request"
    assert message in body["errors"][0]["message"]
    assert body["contextId"]


def test_tokens_and_scopes(sim: Any) -> None:
    assert call(sim, GOOD, None).status_code == 401
    assert call(sim, GOOD, "made-up").status_code == 401
    forbidden = call(sim, GOOD, token(sim, NOSCOPE_ID))
    assert forbidden.status_code == 403
    assert "conversation:write" in forbidden.json()["message"]
    bad_secret = httpx.post(
        f"{sim.url}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(CLIENT_ID, "wrong"),
    )
    assert bad_secret.status_code == 401


def test_a_valid_call_is_accepted_and_listed(sim: Any) -> None:
    response = call(sim, GOOD, token(sim))
    assert response.status_code == 201
    conversation = response.json()["id"]
    assert response.json()["selfUri"] == f"/api/v2/conversations/calls/{conversation}"
    assert [c["id"] for c in sim.calls()] == [conversation]


def test_injected_faults(sim: Any) -> None:
    bearer = token(sim)
    sim.set_faults(script=["429", "503", "drop_before"], retry_after="3")
    throttled = call(sim, GOOD, bearer)
    assert (throttled.status_code, throttled.headers["Retry-After"]) == (429, "3")
    assert throttled.json()["code"] == "too.many.requests"
    assert call(sim, GOOD, bearer).status_code == 503
    with pytest.raises(httpx.RemoteProtocolError):
        call(sim, GOOD, bearer)
    assert call(sim, GOOD, bearer).status_code == 201
    assert [r["status"] for r in sim.requests()] == [429, 503, 0, 201]
    assert len(sim.calls()) == 1


def test_a_script_for_one_number_leaves_the_others_alone(sim: Any) -> None:
    bearer = token(sim)
    other = {**GOOD, "to": [{**GOOD["to"][0], "address": "+61298765433"}]}
    sim.set_faults(by_number={"+61298765432": ["503"]})
    assert call(sim, other, bearer).status_code == 201
    assert call(sim, GOOD, bearer).status_code == 503
    assert call(sim, GOOD, bearer).status_code == 201
    assert [c["number"] for c in sim.calls()] == ["+61298765433", "+61298765432"]


def test_started_as_a_user_starts_it_the_inspection_endpoints_hide_tokens_and_numbers() -> None:
    """`followup simulator` (compose's way) masks bearer tokens and phone numbers in /_sim/*;
    only a simulator started with --show-secrets (the tests' helper) shows them."""
    from followup.cli.local_stack import Simulator

    plain = Simulator(
        "--client",
        f"{CLIENT_ID}:{CLIENT_SECRET}:conversation:write",
        "--any-user",
        show_secrets=False,
    )
    try:
        bearer = token(plain)
        assert call(plain, GOOD, bearer).status_code == 201
        seen = (
            httpx.get(f"{plain.url}/_sim/calls").text + httpx.get(f"{plain.url}/_sim/tokens").text
        )
        assert bearer not in seen
        assert "+61298765432" not in seen and "61298765432" not in seen
        assert "+61*******32" in seen  # masked, as the logs mask it
        listed = httpx.get(f"{plain.url}/_sim/calls").json()
        assert listed[0]["authorization"] == "Bearer <hidden>"
        assert httpx.get(f"{plain.url}/_sim/tokens").json()["tokens"] == {}
    finally:
        plain.stop()
