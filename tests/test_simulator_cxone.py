"""The simulator's cxone mode implements api-contract.md §4 strictly, over real HTTP."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from followup.cli.local_stack import Simulator
from followup.simulator.command import cxone_config
from followup.simulator.contracts import is_dialable
from tests.conftest import FOLLOWUP_BIN

APP, APP_SECRET = "followup-test-app", "app-secret-3c1d"
KEY, KEY_SECRET = "followup-test-key", "key-secret-9b2e"
NOCALLBACK_KEY = "followup-test-readonly"
CALLONLY_KEY = "followup-test-callonly"
SKILL, AGENT, NUMBER = "4242", "1001", "+61298765432"
GOOD = {"phoneNumber": NUMBER, "skill": SKILL, "targetAgent": AGENT}


@pytest.fixture(scope="module")
def cx() -> Iterator[Simulator]:
    sim = Simulator(
        "--dialect", "cxone",
        "--client", f"{APP}:{APP_SECRET}:",
        "--access-key", f"{KEY}:{KEY_SECRET}:callbacks:create,agents:view,contacts:view",
        "--access-key", f"{NOCALLBACK_KEY}:{KEY_SECRET}:agents:view,contacts:view",
        "--access-key", f"{CALLONLY_KEY}:{KEY_SECRET}:callbacks:create",
        "--skill", SKILL, "--user", AGENT, "--user", "1002",
    )  # fmt: skip
    yield sim
    sim.stop()


@pytest.fixture
def sim(cx: Simulator) -> Simulator:
    cx.reset()
    return cx


def grant(sim: Simulator, key: str = KEY, **form: str) -> httpx.Response:
    data = {"grant_type": "password", "username": key, "password": KEY_SECRET, **form}
    return httpx.post(f"{sim.url}/auth/token", data=data, auth=(APP, APP_SECRET))


def token(sim: Simulator, key: str = KEY) -> str:
    answer = grant(sim, key)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def claims(jwt: str) -> dict[str, Any]:
    payload = jwt.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def api(sim: Simulator, version: str = "33.0") -> str:
    return f"{sim.url}/incontactapi/services/v{version}"


def headers(bearer: str | None) -> dict[str, str]:
    auth = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    return {"Accept": "application/json", **auth}


def callback(
    sim: Simulator, params: dict[str, str] | None = None, bearer: str | None = "", **kw: Any
) -> httpx.Response:
    bearer = token(sim) if bearer == "" else bearer
    return httpx.post(
        f"{api(sim)}/queuecallback", params=params or GOOD, headers=headers(bearer), **kw
    )


def ask(sim: Simulator, path: str, bearer: str, **params: str) -> httpx.Response:
    return httpx.get(f"{api(sim)}/{path}", params=params, headers=headers(bearer))


def cx_text(answer: httpx.Response) -> str:
    """Where CXone puts an error's text: error_description, message, error, else the header."""
    if answer.content:
        body = answer.json()
        return str(body.get("error_description") or body.get("message") or body.get("error"))
    return answer.headers["icStatusDescription"]


# --- the token and discovery --------------------------------------------------------------


def test_the_password_grant_gives_a_jwt_that_carries_the_tenant(sim: Simulator) -> None:
    answer = grant(sim)
    assert answer.status_code == 200
    body = answer.json()
    assert (body["token_type"], body["expires_in"]) == ("Bearer", 3600)
    assert body["refresh_token"] and body["id_token"]
    header = json.loads(base64.urlsafe_b64decode(body["access_token"].split(".")[0] + "=="))
    assert header == {"alg": "HS256", "typ": "JWT"}
    assert claims(body["access_token"])["tenantId"]
    assert body["access_token"] in sim.tokens()["tokens"]


def test_the_token_endpoint_refuses_in_oauths_words(sim: Simulator) -> None:
    url, form = f"{sim.url}/auth/token", {"grant_type": "password", "username": KEY}
    wrong_app = httpx.post(url, data={**form, "password": KEY_SECRET}, auth=(APP, "wrong"))
    assert (wrong_app.status_code, wrong_app.json()["error"]) == (401, "invalid_client")
    in_the_form = httpx.post(
        url, data={**form, "password": KEY_SECRET, "client_id": APP, "client_secret": APP_SECRET}
    )
    assert (in_the_form.status_code, in_the_form.json()["error"]) == (401, "invalid_client")
    wrong_key = httpx.post(url, data={**form, "password": "wrong"}, auth=(APP, APP_SECRET))
    assert (wrong_key.status_code, wrong_key.json()["error"]) == (400, "invalid_grant")
    assert wrong_key.json()["error_description"]
    client_credentials = grant(sim, grant_type="client_credentials")
    assert client_credentials.json()["error"] == "unsupported_grant_type"
    assert httpx.post(f"{sim.url}/oauth/token", data=form).status_code == 404


def test_discovery_gives_the_api_endpoint_for_the_tokens_tenant(sim: Simulator) -> None:
    tenant = claims(token(sim))["tenantId"]
    url = f"{sim.url}/.well-known/cxone-configuration"
    found = httpx.get(url, params={"tenantId": tenant})  # no Authorization: none is needed
    assert found.status_code == 200
    assert found.json()["api_endpoint"] == sim.url
    assert httpx.get(url, params={"tenantId": "someone-else"}).status_code == 404
    assert httpx.get(url).status_code == 400
    assert sim.tokens()["discovery_requests"] == 3


def test_scripted_tokens_and_discovery_failures(sim: Simulator) -> None:
    sim.set_faults(
        token_script=["jwt_no_tenant", "token_opaque", "400", "401", "503"],
        discovery_script=["503", "no_endpoint", "ok"],
    )
    assert "tenantId" not in claims(token(sim))
    assert token(sim).count(".") == 0
    assert grant(sim).json()["error"] == "invalid_grant"
    assert grant(sim).json()["error"] == "invalid_client"
    assert grant(sim).status_code == 503
    url = f"{sim.url}/.well-known/cxone-configuration"
    tenant = claims(token(sim))["tenantId"]
    assert httpx.get(url, params={"tenantId": tenant}).status_code == 503
    assert "api_endpoint" not in httpx.get(url, params={"tenantId": tenant}).json()
    assert httpx.get(url, params={"tenantId": tenant}).json()["api_endpoint"] == sim.url


# --- the call -----------------------------------------------------------------------------


def test_a_callback_is_accepted_with_202_and_an_empty_body(sim: Simulator) -> None:
    answer = callback(sim, {**GOOD, "callerID": "+61290000000"})
    assert (answer.status_code, answer.content) == (202, b"")
    [call] = sim.calls()
    assert call["id"].isdigit()  # the contactId, as lookups and 202_body give it
    assert (call["user_id"], call["agent"], call["skill"], call["number"]) == (
        AGENT,
        int(AGENT),
        int(SKILL),
        NUMBER,
    )
    assert (call["caller_id"], call["key_id"], call["client_id"]) == ("+61290000000", KEY, APP)
    assert [(r["status"], r["number"], r["agent"]) for r in sim.requests()] == [
        (202, NUMBER, AGENT)
    ]


@pytest.mark.parametrize(
    ("params", "code", "text"),
    [
        ({**GOOD, "phoneNumber": "0298765432"}, "InvalidParameter", "Phone Number is not valid."),
        ({**GOOD, "phoneNumber": "+612987"}, "InvalidParameter", "Phone Number is not valid."),
        ({"skill": SKILL, "targetAgent": AGENT}, "InvalidParameter", "Phone Number is not valid."),
        ({**GOOD, "skill": "skill-1"}, "InvalidSkillId", "Invalid skill."),
        ({**GOOD, "skill": "4242.0"}, "InvalidSkillId", "Invalid skill."),
        ({**GOOD, "skill": "999"}, "InvalidSkillId", "Skill is not valid."),
        ({**GOOD, "targetAgent": "u-1001"}, "InvalidAgentId", "Invalid Agent Id"),
        ({**GOOD, "targetAgent": "7777"}, "InvalidAgentId", "Invalid Agent Id"),
        ({"phoneNumber": NUMBER, "skill": SKILL}, "InvalidAgentId", "Invalid Agent Id"),
        ({**GOOD, "priorityManagement": "1"}, "InvalidParameter", "'priorityManagement'"),
        ({**GOOD, "contactId": "c-1"}, "InvalidParameter", "'contactId' is not valid"),
        ({**GOOD, "callDelay": "60"}, "InvalidParameter", "callDelay"),
    ],
)
def test_queuecallback_refuses_bad_parameters_in_cxones_shape(
    sim: Simulator, params: dict[str, str], code: str, text: str
) -> None:
    answer = callback(sim, params)
    assert answer.status_code == 400
    assert answer.json()["error"] == code
    assert text in answer.json()["error_description"]
    assert text in answer.headers["icStatusDescription"]
    assert sim.calls() == []


def test_queuecallback_refuses_a_body_a_repeated_or_unencoded_parameter(sim: Simulator) -> None:
    bearer = token(sim)
    with_body = callback(sim, bearer=bearer, json={"phoneNumber": NUMBER})
    assert (with_body.status_code, "no body" in cx_text(with_body)) == (400, True)
    twice = httpx.post(
        f"{api(sim)}/queuecallback?phoneNumber=%2B61298765432&skill=4242&skill=4243"
        f"&targetAgent={AGENT}",
        headers=headers(bearer),
    )
    assert "given twice" in cx_text(twice)
    raw_plus = httpx.post(  # a '+' left unencoded in a query string reads as a space
        f"{api(sim)}/queuecallback?phoneNumber=+61298765432&skill={SKILL}&targetAgent={AGENT}",
        headers=headers(bearer),
    )
    assert cx_text(raw_plus) == "Phone Number is not valid."
    assert sim.calls() == []


def test_queuecallback_wants_a_fresh_token_json_a_known_version_and_the_permission(
    sim: Simulator,
) -> None:
    no_token = callback(sim, bearer=None)
    assert (no_token.status_code, no_token.content) == (401, b"")
    assert no_token.headers["icStatusDescription"]
    stale = token(sim)
    sim.expire_tokens()
    assert callback(sim, bearer=stale).status_code == 401
    bearer = token(sim)
    no_accept = httpx.post(
        f"{api(sim)}/queuecallback", params=GOOD, headers={"Authorization": f"Bearer {bearer}"}
    )
    assert no_accept.status_code == 406
    assert cx_text(no_accept) == "No known way to render data"
    old = httpx.post(f"{api(sim, '34')}/queuecallback", params=GOOD, headers=headers(bearer))
    assert old.status_code == 404
    forbidden = callback(sim, bearer=token(sim, NOCALLBACK_KEY))
    assert forbidden.status_code == 403
    assert "callbacks:create" in forbidden.json()["message"]
    assert sim.calls() == []
    assert [r["status"] for r in sim.requests()] == [401, 401, 406, 404, 403]


@pytest.mark.parametrize(
    ("fault", "status", "retry_after", "text"),
    [
        ("429", 429, "3", "Too Many Requests"),
        ("429_bare", 429, None, "Too Many Requests"),
        ("503", 503, "3", "Service Unavailable"),
        ("503_bare", 503, None, "Service Unavailable"),
        ("500", 500, None, "Scripted 500 from the simulator"),
        ("400", 400, None, "Scripted 400 from the simulator"),
        ("400_header", 400, None, "Scripted 400 from the simulator"),
        ("400_message", 400, None, "Scripted 400 from the simulator"),
        ("400_error", 400, None, "Scripted 400 from the simulator"),
        ("403", 403, None, "Scripted 403 from the simulator"),
        ("404", 404, None, "resource not found"),
    ],
)
def test_scripted_errors_per_number_take_no_callback(
    sim: Simulator, fault: str, status: int, retry_after: str | None, text: str
) -> None:
    other = "+61298765433"
    sim.set_faults(by_number={NUMBER: [fault]}, retry_after="3")
    bearer = token(sim)
    answer = callback(sim, bearer=bearer)
    assert answer.status_code == status
    assert answer.headers.get("Retry-After") == retry_after
    assert cx_text(answer) == text
    if fault == "400_header":
        assert answer.content == b""
    assert callback(sim, {**GOOD, "phoneNumber": other}, bearer=bearer).status_code == 202
    assert callback(sim, bearer=bearer).status_code == 202  # the script is spent
    assert [c["number"] for c in sim.calls()] == [other, NUMBER]


def test_hangs_and_drops_after_taking_the_callback(sim: Simulator) -> None:
    sim.set_faults(script=["hang", "drop_after", "drop_before", "202_body"], hang_s=5)
    bearer = token(sim)
    with pytest.raises(httpx.ReadTimeout):
        callback(sim, bearer=bearer, timeout=0.5)
    with pytest.raises(httpx.RemoteProtocolError):
        callback(sim, bearer=bearer)
    with pytest.raises(httpx.RemoteProtocolError):
        callback(sim, bearer=bearer)
    with_body = callback(sim, bearer=bearer)
    assert with_body.status_code == 202
    taken = [c["id"] for c in sim.calls()]
    assert len(taken) == 3  # hang, drop_after and 202_body took theirs; drop_before did not
    assert str(with_body.json()["contactId"]) == taken[-1]


# --- asking the platform ------------------------------------------------------------------


def test_agent_states(sim: Simulator) -> None:
    bearer = token(sim)
    sim.set_faults(agent_states={"1002": "Dialer"})
    assert ask(sim, "agents/1001/states", bearer).json()["agentStates"][0]["agentStateName"] == (
        "Available"
    )
    [state] = ask(sim, "agents/1002/states", bearer).json()["agentStates"]
    assert (state["agentId"], state["agentStateName"]) == (1002, "Dialer")
    sim.set_faults(busy_users={AGENT: 60})
    busy = ask(sim, f"agents/{AGENT}/states", bearer).json()["agentStates"][0]
    assert busy["agentStateName"] == "InboundContact"
    for unknown in ("7777", "u-1001"):
        answer = ask(sim, f"agents/{unknown}/states", bearer)
        assert (answer.status_code, cx_text(answer)) == (404, "Invalid Agent Id")
    assert ask(sim, f"agents/{AGENT}/states", "stale").status_code == 401
    asked = sim.queries()
    assert [q["endpoint"] for q in asked] == ["availability"] * 6
    assert [q["user"] for q in asked] == ["1001", "1002", AGENT, "7777", "u-1001", AGENT]
    assert [q["status"] for q in asked] == [200, 200, 200, 404, 404, 401]


def test_contacts_are_the_callbacks_it_took_active_then_completed(sim: Simulator) -> None:
    bearer = token(sim)
    assert ask(sim, "contacts/active", bearer).status_code == 204
    assert ask(sim, "contacts/completed", bearer).status_code == 204
    before = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    callback(sim, bearer=bearer)
    callback(sim, {**GOOD, "targetAgent": "1002"}, bearer=bearer)
    contact = sim.calls()[0]["id"]
    mine = {"agentId": AGENT, "skillId": SKILL, "toAddress": NUMBER}

    [active] = ask(sim, "contacts/active", bearer, **mine, updatedSince=before).json()[
        "activeContacts"
    ]
    assert (active["contactId"], active["agentId"], active["targetAgentId"]) == (
        int(contact),
        int(AGENT),
        int(AGENT),
    )
    assert (active["skillId"], active["toAddress"]) == (int(SKILL), NUMBER)
    assert ask(sim, "contacts/active", bearer, toAddress="61298765432", agentId=AGENT).json()
    later = (datetime.now(UTC) + timedelta(seconds=60)).isoformat()
    assert ask(sim, "contacts/active", bearer, **mine, updatedSince=later).status_code == 204
    assert ask(sim, "contacts/active", bearer, agentId="1003").status_code == 204
    assert ask(sim, "contacts/completed", bearer, **mine).status_code == 204

    sim.set_faults(contact_active_s=0)  # every callback taken is a completed contact now
    assert ask(sim, "contacts/active", bearer).status_code == 204
    window = {"startDate": before, "endDate": later}
    [done] = ask(sim, "contacts/completed", bearer, **mine, **window).json()["completedContacts"]
    assert (done["contactId"], done["isOutbound"]) == (int(contact), True)
    assert done["contactStart"]
    assert ask(sim, "contacts/completed", bearer, endDate=before).status_code == 204
    assert len(ask(sim, "contacts/completed", bearer).json()["completedContacts"]) == 2


def test_contacts_refuse_unknown_or_malformed_filters(sim: Simulator) -> None:
    bearer = token(sim)
    for path, params, text in (
        ("contacts/active", {"startDate": "2026-01-01T00:00:00Z"}, "'startDate' is not valid"),
        ("contacts/completed", {"updatedSince": "2026-01-01T00:00:00Z"}, "'updatedSince'"),
        ("contacts/active", {"agentId": "u-1001"}, "'agentId' must be an integer"),
        ("contacts/completed", {"startDate": "yesterday"}, "'startDate' must be an ISO 8601"),
    ):
        answer = ask(sim, path, bearer, **params)
        assert answer.status_code == 400
        assert text in cx_text(answer)
    call_only = token(sim, CALLONLY_KEY)
    for path in ("contacts/active", "contacts/completed", f"agents/{AGENT}/states"):
        forbidden = ask(sim, path, call_only)
        assert forbidden.status_code == 403
        assert "view" in forbidden.json()["message"]
    assert [q["status"] for q in sim.queries()] == [400] * 4 + [403] * 3


def test_scripted_answers_to_the_questions(sim: Simulator) -> None:
    bearer = token(sim)
    callback(sim, bearer=bearer)
    sim.set_faults(
        availability_script=["429", "odd_shape", "hang"],
        analytics_script=["503_bare", "500", "odd_shape", "ok"],
        retry_after="2",
        hang_s=5,
    )
    throttled = ask(sim, f"agents/{AGENT}/states", bearer)
    assert (throttled.status_code, throttled.headers["Retry-After"]) == (429, "2")
    assert ask(sim, f"agents/{AGENT}/states", bearer).json() == {"agentStates": {}}
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{api(sim)}/agents/{AGENT}/states", headers=headers(bearer), timeout=0.5)
    assert ask(sim, f"agents/{AGENT}/states", bearer).status_code == 200
    unavailable = ask(sim, "contacts/active", bearer)
    assert (unavailable.status_code, "Retry-After" in unavailable.headers) == (503, False)
    assert ask(sim, "contacts/completed", bearer).status_code == 500
    assert ask(sim, "contacts/active", bearer).json() == [1]
    assert ask(sim, "contacts/active", bearer, agentId=AGENT).json()["activeContacts"]
    statuses = [(q["endpoint"], q["status"]) for q in sim.queries()]
    assert statuses[-4:] == [
        ("contacts_active", 503),
        ("contacts_completed", 500),
        ("contacts_active", 200),
        ("contacts_active", 200),
    ]


def test_a_lag_keeps_a_new_callback_out_of_the_contacts(sim: Simulator) -> None:
    sim.set_faults(analytics_lag_s=300)
    bearer = token(sim)
    assert callback(sim, bearer=bearer).status_code == 202
    assert ask(sim, "contacts/active", bearer).status_code == 204
    assert ask(sim, "contacts/completed", bearer).status_code == 204


# --- configuring it -----------------------------------------------------------------------


def test_a_tenant_with_another_dialling_plan_endpoint_and_version() -> None:
    sim = Simulator(
        "--dialect", "cxone", "--any-user", "--any-skill", "--phone-format", "digits",
        "--api-endpoint", "http://127.0.0.1:9/", "--api-version", "12.0",
        "--tenant-id", "tenant-7", show_secrets=False,
    )  # fmt: skip
    try:
        bearer = httpx.post(
            f"{sim.url}/auth/token",
            data={"grant_type": "password", "username": "followup-key", "password": "key-secret"},
            auth=("followup-demo", "demo-secret"),
        ).json()["access_token"]
        assert claims(bearer)["tenantId"] == "tenant-7"
        found = httpx.get(
            f"{sim.url}/.well-known/cxone-configuration", params={"tenantId": "tenant-7"}
        )
        assert found.json()["api_endpoint"] == "http://127.0.0.1:9"
        url = f"{api(sim, '12.0')}/queuecallback"
        digits = {"phoneNumber": "61298765432", "skill": "17", "targetAgent": "5"}
        assert httpx.post(url, params=digits, headers=headers(bearer)).status_code == 202
        e164 = {**digits, "phoneNumber": NUMBER}
        assert httpx.post(url, params=e164, headers=headers(bearer)).status_code == 400
        v33 = f"{api(sim, '33.0')}/queuecallback"
        assert httpx.post(v33, params=digits, headers=headers(bearer)).status_code == 404
        [call] = sim.calls()  # without --show-secrets: the number masked, the contactId whole
        assert "61298765432" not in json.dumps(call)
        assert call["id"].isdigit()
    finally:
        sim.stop()


def test_a_cxone_flag_with_another_dialect_is_refused_by_name() -> None:
    with pytest.raises(RuntimeError, match="exited with code 2"):
        Simulator("--dialect", "genesys", "--skill", "1")  # said at once, not after a deadline
    done = subprocess.run(
        [FOLLOWUP_BIN, "simulator", "--port", "1", "--dialect", "genesys", "--skill", "1"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (done.returncode, "--skill: only with --dialect cxone" in done.stderr) == (2, True)


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        ({"api_versions": ["33"]}, "--api-version"),
        ({"access_keys": ["no-secret"]}, "--access-key"),
        ({"phone_region": "XX"}, "--phone-region"),
        ({"skills": [0]}, "--skill"),
    ],
)
def test_bad_cxone_flags_are_refused_by_name(flags: dict[str, Any], named: str) -> None:
    unset: dict[str, Any] = dict.fromkeys(
        ("access_keys", "skills", "tenant_id", "api_endpoint", "api_versions", "phone_format"),
    )
    given = {**unset, "phone_region": None, "any_skill": False, **flags}
    with pytest.raises(ValueError, match=named):
        cxone_config(dialect="cxone", **given)


@pytest.mark.parametrize(
    ("number", "phone_format", "region", "dialable"),
    [
        ("+61298765432", "e164", "US", True),
        ("61298765432", "e164", "US", False),
        ("61298765432", "digits", "US", True),
        ("+61298765432", "digits", "US", False),
        ("2125551234", "national", "US", True),
        ("0298765432", "national", "AU", True),
        ("+12125551234", "national", "US", False),
        ("212555", "national", "US", False),
    ],
)
def test_the_dialling_plans(number: str, phone_format: str, region: str, dialable: bool) -> None:
    assert is_dialable(number, phone_format, region) is dialable
