"""Every dialect, end to end: a real worker against a strict simulator of each platform.

conversations is the seed's contract (api-contract.md §1); genesys is Genesys Cloud (§2):
POST /api/v2/conversations/calls/user/{userId} with a flat CreateCallRequest; cxone is NICE
CXone (§4): POST .../queuecallback with the parameters in the query, a 202 without a body.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from followup.cli.local_stack import Simulator, Worker, wait_until
from followup.config.settings import ConfigError, load_settings
from followup.simulator.contracts import CREATE_CALL_FIELDS
from followup.tasks.producer import FollowUpClient
from followup.tasks.request import FollowUpRequest
from followup.worker.http import PlatformHttp
from followup.worker.platforms.genesys.client import GenesysPlatform
from followup.worker.records import StatusRecord
from tests.conftest import CLIENT_ID, CLIENT_SECRET, NOSCOPE_ID, TEST_USERS, calls_for, requests_for
from tests.test_cxone import APP, APP_SECRET, KEY, KEY_SECRET, NOCALLBACK_KEY, SKILL

pytestmark = pytest.mark.integration
CONTRACT = (Path(__file__).resolve().parent.parent / "docs" / "api-contract.md").read_text()
NUMBER = "+61298765432"


@dataclass
class Platform:
    dialect: str
    sim: Simulator
    client: FollowUpClient
    noscope_queue: str

    @property
    def user(self) -> str:
        return "1001" if self.dialect == "cxone" else "u-1001"  # a CXone agent id is a number

    @property
    def created(self) -> int:
        return 202 if self.dialect == "cxone" else 201

    def enqueue(self, contact: str | None = None, **fields: Any) -> str:
        request = {"contact_id": contact or _unique(), "user_id": self.user, "phone_number": NUMBER}
        return self.client.enqueue({**request, **fields})

    def script(self, contact: str, faults: list[str], **spec: Any) -> None:
        """Faults for this contact's calls (CXone's queuecallback carries no contact: its
        number, which one test at a time dials)."""
        by = {"by_number": {NUMBER: faults}} if self.dialect == "cxone" else None
        self.sim.set_faults(**(by or {"by_contact": {contact: faults}}), **spec)

    def wait(self, request_id: str, *states: str, timeout_s: float = 20) -> StatusRecord:
        def reached() -> StatusRecord | None:
            record = self.client.status(request_id)
            return record if record and record.state in states else None

        return wait_until(reached, timeout_s, f"{request_id} in {states}")


def _unique() -> str:
    return f"c-{uuid.uuid4().hex[:10]}"


def _simulator(dialect: str) -> Simulator:
    if dialect == "cxone":
        return Simulator(
            "--dialect", "cxone",
            "--client", f"{APP}:{APP_SECRET}:",
            "--access-key", f"{KEY}:{KEY_SECRET}:callbacks:create,agents:view,contacts:view",
            "--access-key", f"{NOCALLBACK_KEY}:{KEY_SECRET}:agents:view,contacts:view",
            "--skill", SKILL, "--user", "1001", "--user", "1002",
        )  # fmt: skip
    permission = "conversation:call:add" if dialect == "genesys" else "conversation:write"
    lacking = "conversation:view" if dialect == "genesys" else "user:call:center:write"
    args = ["--dialect", dialect]
    args += ["--client", f"{CLIENT_ID}:{CLIENT_SECRET}:{permission}"]
    args += ["--client", f"{NOSCOPE_ID}:{CLIENT_SECRET}:{lacking}"]
    for user in TEST_USERS:
        args += ["--user", user]
    return Simulator(*args)


def _cxone_settings(sim: Simulator) -> dict[str, str]:
    return {
        "FOLLOWUP_TOKEN_URL": f"{sim.url}/auth/token",
        "FOLLOWUP_CLIENT_ID": APP,
        "FOLLOWUP_CLIENT_SECRET": APP_SECRET,
        "FOLLOWUP_CXONE_ACCESS_KEY_ID": KEY,
        "FOLLOWUP_CXONE_ACCESS_KEY_SECRET": KEY_SECRET,
        "FOLLOWUP_CXONE_SKILL_ID": SKILL,
    }


@pytest.fixture(scope="module", params=["conversations", "genesys", "cxone"])
def platform(
    request: pytest.FixtureRequest, env: dict[str, str], log_dir: Path
) -> Iterator[Platform]:
    dialect = request.param
    sim = _simulator(dialect)
    suffix = f"{dialect}-{uuid.uuid4().hex[:6]}"
    settings = {
        **env,
        "FOLLOWUP_API_DIALECT": dialect,
        "FOLLOWUP_API_BASE_URL": sim.url,
        "FOLLOWUP_NAMESPACE": f"{env['FOLLOWUP_NAMESPACE']}-{suffix}",
        "FOLLOWUP_QUEUE": f"{env['FOLLOWUP_QUEUE']}-{suffix}",
        **(_cxone_settings(sim) if dialect == "cxone" else {}),
    }
    noscope_queue = f"{settings['FOLLOWUP_QUEUE']}-noscope"
    noscope = (
        {"FOLLOWUP_CXONE_ACCESS_KEY_ID": NOCALLBACK_KEY}
        if dialect == "cxone"
        else {"FOLLOWUP_CLIENT_ID": NOSCOPE_ID}
    )
    workers = [
        Worker(settings, name=f"{suffix}-main", log_dir=log_dir),
        Worker(
            {**settings, "FOLLOWUP_QUEUE": noscope_queue, **noscope},
            name=f"{suffix}-noscope",
            log_dir=log_dir,
        ),
    ]
    client = FollowUpClient(load_settings(settings))
    try:
        yield Platform(dialect, sim, client, noscope_queue)
    finally:
        client.close()
        for w in workers:
            w.stop()
        sim.stop()


@pytest.fixture
def on(platform: Platform) -> Platform:
    platform.sim.reset()
    return platform


def test_a_call_is_placed_with_the_dialects_request(on: Platform) -> None:
    contact = _unique()
    request_id = on.enqueue(contact, metadata={"ticket": "T-88", "vip": True, "score": 4.5})
    record = on.wait(request_id, "placed")

    calls = calls_for(on.sim, request_id)
    assert len(calls) == 1
    assert record.attempts == 1
    if on.dialect == "cxone":  # a 202 without a body: the id comes with a lookup, if at all
        assert record.conversation_id in (None, str(calls[0]["id"]))
        assert calls[0]["query"] == {"phoneNumber": NUMBER, "skill": SKILL, "targetAgent": "1001"}
        return
    assert record.conversation_id == calls[0]["id"]
    assert calls[0]["user_id"] == "u-1001"
    if on.dialect == "genesys":
        assert calls[0]["body"] == {
            "phoneNumber": NUMBER,
            "attributes": {
                "ticket": "T-88",
                "vip": "true",
                "score": "4.5",
                "followup_request_id": request_id,
                "followup_contact_id": contact,
            },
        }
    else:
        assert calls[0]["body"]["from"] == {
            "id": "u-1001",
            "address": "u-1001",
            "addressType": "user",
        }


def test_a_400_fails_and_keeps_the_error_body(on: Platform) -> None:
    contact = _unique()
    on.script(contact, ["400"])
    record = on.wait(on.enqueue(contact), "failed")
    assert record.attempts == 1
    assert record.last_error is not None
    if on.dialect == "cxone":  # CXone's error text, not the platform-neutral ErrorBody
        assert record.last_error.status == 400
        assert "Scripted 400 from the simulator" in record.last_error.message
        return
    assert (record.last_error.status, record.last_error.code) == (400, "bad.request")
    assert record.last_error.context_id
    assert record.last_error.errors[0]["code"] == "scripted"


def test_a_401_gets_a_fresh_token_and_places(on: Platform) -> None:
    on.wait(on.enqueue(), "placed")  # the worker holds a token now
    on.sim.expire_tokens()
    request_id = on.enqueue()
    record = on.wait(request_id, "placed")
    statuses = [r["status"] for r in requests_for(on.sim, request_id)]
    if on.dialect == "genesys":  # the busy check met the 401 first, and got the fresh token
        assert statuses == [201]
        assert [q["status"] for q in on.sim.queries()][-2:] == [401, 200]
    else:
        assert statuses == [401, on.created]
    assert record.attempts == 1


def test_a_403_names_the_permission_the_dialect_needs(on: Platform) -> None:
    request_id = on.client.enqueue(
        contact_id=_unique(), user_id=on.user, phone_number=NUMBER, queue=on.noscope_queue
    )
    record = on.wait(request_id, "failed")
    assert record.last_error is not None and record.last_error.status == 403
    needed = {
        "genesys": ["conversation:call:add", "conversation:agentlessCall:add"],
        "cxone": ["FOLLOWUP_CXONE_ACCESS_KEY_ID", "the permission to create callbacks"],
    }.get(on.dialect, ["conversation:write"])
    for permission in needed:
        assert permission in record.last_error.message
    assert calls_for(on.sim, request_id) == []


def test_a_429_with_retry_after_is_waited_out(on: Platform) -> None:
    contact = _unique()
    on.script(contact, ["429"], retry_after="2")
    request_id = on.enqueue(contact)
    on.wait(request_id, "placed")
    sent = requests_for(on.sim, request_id)
    assert [r["status"] for r in sent] == [429, on.created]
    assert sent[1]["at"] - sent[0]["at"] >= 2.0


def test_a_429_without_retry_after_is_waited_out(on: Platform) -> None:
    contact = _unique()
    on.script(contact, ["429"], retry_after="")  # no Retry-After header at all
    request_id = on.enqueue(contact)
    record = on.wait(request_id, "placed", timeout_s=60)
    assert [r["status"] for r in requests_for(on.sim, request_id)] == [429, on.created]
    assert len(calls_for(on.sim, request_id)) == 1
    assert record.attempts == 1


def test_a_503_then_success_is_placed(on: Platform) -> None:
    contact = _unique()
    on.script(contact, ["503"], retry_after="0")
    request_id = on.enqueue(contact)
    record = on.wait(request_id, "placed")
    assert [r["status"] for r in requests_for(on.sim, request_id)] == [503, on.created]
    assert len(calls_for(on.sim, request_id)) == 1
    assert record.attempts == 1  # a 503 with Retry-After spends no attempt


# --- genesys only -------------------------------------------------------------------------


def _contract_fields() -> set[str]:
    """CreateCallRequest's field names, read from api-contract.md §2."""
    section = CONTRACT[CONTRACT.index("**CreateCallRequest**") : CONTRACT.index("Unknown fields")]
    return set(re.findall(r"`([a-zA-Z]+)`", section)) - {"int"}


def test_the_genesys_body_uses_only_createcallrequest_fields() -> None:
    assert _contract_fields() == CREATE_CALL_FIELDS  # the simulator's strict list, exactly
    http = PlatformHttp(timeout_s=1, keepalive_s=0, max_connections=1)
    configured = {
        "FOLLOWUP_API_DIALECT": "genesys",
        "FOLLOWUP_GENESYS_CALLER_ID": "+61290000000",
        "FOLLOWUP_GENESYS_CALLER_ID_NAME": "Acme",
        "FOLLOWUP_GENESYS_QUEUE_ID": "q-1",
    }
    platform = GenesysPlatform(load_settings(configured), http)
    request = FollowUpRequest(
        contact_id="c-1", user_id="u:1@x", phone_number=NUMBER, metadata={"a": 1, "b": None}
    )
    call = platform.call_request(request, "r-1")
    body = call.json or {}
    assert set(body) == {"phoneNumber", "attributes", "callerId", "callerIdName", "callFromQueueId"}
    assert set(body) <= _contract_fields()
    assert body["attributes"] == {
        "a": "1",
        "b": "",
        "followup_request_id": "r-1",
        "followup_contact_id": "c-1",
    }
    assert call.path == "/api/v2/conversations/calls/user/u%3A1%40x"
    bare = GenesysPlatform(load_settings({"FOLLOWUP_API_DIALECT": "genesys"}), http)
    assert set(bare.call_request(request, "r-1").json or {}) == {"phoneNumber", "attributes"}


@pytest.fixture(scope="module")
def genesys_sim() -> Iterator[Simulator]:
    sim = _simulator("genesys")
    yield sim
    sim.stop()


def _token(sim: Simulator) -> str:
    answer = httpx.post(
        f"{sim.url}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(CLIENT_ID, CLIENT_SECRET),
    )
    return str(answer.json()["access_token"])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"from": {"id": "u-1001"}, "to": [{"address": NUMBER}], "type": "outbound"},
            "Unrecognized field 'from'",
        ),
        ({"phoneNumber": NUMBER, "callType": "PERSONAL_CONNECTION"}, "Unrecognized field"),
        ({"phoneNumber": NUMBER, "attributes": {"vip": True}}, "map of strings to strings"),
        ({"phoneNumber": "+612987"}, "not a valid E.164 number"),
        ({"phoneNumber": "0298765432"}, "not a valid E.164 number"),
    ],
)
def test_the_genesys_simulator_is_strict(genesys_sim: Simulator, body: Any, message: str) -> None:
    answer = httpx.post(
        f"{genesys_sim.url}/api/v2/conversations/calls/user/u-1001",
        json=body,
        headers={"Authorization": f"Bearer {_token(genesys_sim)}"},
    )
    assert answer.status_code == 400
    assert message in answer.json()["errors"][0]["message"]


def test_the_genesys_simulator_wants_basic_auth_and_a_user_in_the_path(
    genesys_sim: Simulator,
) -> None:
    no_basic = httpx.post(
        f"{genesys_sim.url}/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        },
    )
    assert no_basic.status_code == 401
    plain = httpx.post(
        f"{genesys_sim.url}/api/v2/conversations/calls",
        json={"phoneNumber": NUMBER},
        headers={"Authorization": f"Bearer {_token(genesys_sim)}"},
    )
    assert plain.status_code == 400
    assert "No user context" in plain.json()["message"]


def test_dialect_settings_are_checked_and_the_region_gives_the_hosts() -> None:
    base = {"FOLLOWUP_API_DIALECT": "genesys", "FOLLOWUP_GENESYS_REGION": "mypurecloud.com.au"}
    settings = load_settings(base)
    assert settings.effective_api_base_url == "https://api.mypurecloud.com.au"
    assert settings.effective_token_url == "https://login.mypurecloud.com.au/oauth/token"
    overridden = load_settings(
        {
            **base,
            "FOLLOWUP_API_BASE_URL": "http://127.0.0.1:9",
            "FOLLOWUP_TOKEN_URL": "http://127.0.0.1:9/token",
        }
    )
    assert overridden.effective_api_base_url == "http://127.0.0.1:9"
    assert overridden.effective_token_url == "http://127.0.0.1:9/token"
    plain = load_settings({"FOLLOWUP_API_BASE_URL": "http://127.0.0.1:9"})
    assert plain.effective_token_url == "http://127.0.0.1:9/oauth/token"

    for bad, named in (
        ({"FOLLOWUP_API_DIALECT": "cxone"}, "FOLLOWUP_API_DIALECT"),
        ({**base, "FOLLOWUP_GENESYS_REGION": "mypurecloud.moon"}, "FOLLOWUP_GENESYS_REGION"),
        ({"FOLLOWUP_GENESYS_CALLER_ID": "+61290000000"}, "FOLLOWUP_API_DIALECT=genesys"),
    ):
        with pytest.raises(ConfigError, match=named):
            load_settings(bad)
