"""NICE CXone end to end: a real worker with FOLLOWUP_API_DIALECT=cxone, an access key, a
skill and no API base URL (discovered from the token's tenantId), against the simulator in
cxone mode."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from followup.cli.local_stack import Simulator, Worker, wait_until
from followup.config.settings import load_settings
from followup.tasks.producer import FollowUpClient
from followup.tasks.request import InvalidRequest
from followup.worker.records import StatusRecord
from tests.conftest import calls_for, foreign_client, requests_for

pytestmark = pytest.mark.integration
APP, APP_SECRET = "followup-test-app", "app-secret-3c1d"
KEY, KEY_SECRET = "followup-test-key", "key-secret-9b2e"
NOCALLBACK_KEY = "followup-test-nocallback"
SKILL, AGENT, NUMBER = "4242", "1001", "+61298765432"
BIN = Path(sys.executable).parent


class Cxone:
    def __init__(self, env: dict[str, str], log_dir: Path, **settings: str) -> None:
        self.sim = Simulator(
            "--dialect", "cxone",
            "--client", f"{APP}:{APP_SECRET}:",
            "--access-key", f"{KEY}:{KEY_SECRET}:callbacks:create,agents:view,contacts:view",
            "--access-key", f"{NOCALLBACK_KEY}:{KEY_SECRET}:agents:view,contacts:view",
            "--skill", SKILL, "--user", AGENT, "--user", "1002",
        )  # fmt: skip
        suffix = uuid.uuid4().hex[:6]
        self.env = {
            **{k: v for k, v in env.items() if k != "FOLLOWUP_API_BASE_URL"},
            "FOLLOWUP_API_DIALECT": "cxone",
            "FOLLOWUP_TOKEN_URL": f"{self.sim.url}/auth/token",
            "FOLLOWUP_CXONE_DISCOVERY_URL": f"{self.sim.url}/.well-known/cxone-configuration",
            "FOLLOWUP_CLIENT_ID": APP,
            "FOLLOWUP_CLIENT_SECRET": APP_SECRET,
            "FOLLOWUP_CXONE_ACCESS_KEY_ID": KEY,
            "FOLLOWUP_CXONE_ACCESS_KEY_SECRET": KEY_SECRET,
            "FOLLOWUP_CXONE_SKILL_ID": SKILL,
            "FOLLOWUP_NAMESPACE": f"{env['FOLLOWUP_NAMESPACE']}-cx-{suffix}",
            "FOLLOWUP_QUEUE": f"{env['FOLLOWUP_QUEUE']}-cx-{suffix}",
            "FOLLOWUP_RECONCILE_AFTER_S": "1",
            "FOLLOWUP_RECONCILE_FOR_S": "4",
            **settings,
        }
        self.log_dir = log_dir
        self.workers: list[Worker] = []
        self.client = FollowUpClient(load_settings(self.env))

    def start_worker(self, **overrides: str) -> Worker:
        """A worker with this stand-in's settings and no FOLLOWUP_API_BASE_URL at all (the
        session's is in this process's environment, which a worker inherits)."""
        with pytest.MonkeyPatch.context() as patch:
            patch.delenv("FOLLOWUP_API_BASE_URL", raising=False)
            worker = Worker(
                {**self.env, **overrides},
                name=f"cx-{len(self.workers)}-{uuid.uuid4().hex[:4]}",
                log_dir=self.log_dir,
            )
        self.workers.append(worker)
        return worker

    def enqueue(self, user: str = AGENT, **fields: Any) -> str:
        return self.client.enqueue(
            contact_id=f"c-{uuid.uuid4().hex[:8]}", user_id=user, phone_number=NUMBER, **fields
        )

    def until(self, request_id: str, check: Callable[[StatusRecord], bool], what: str) -> Any:
        def described() -> str:
            record = self.client.status(request_id)
            shown = [(h.event, h.detail) for h in record.history] if record else None
            return f"{what}; last: {record and record.state} {shown}"

        return wait_until(
            lambda: (r := self.client.status(request_id)) and check(r) and r, 30, described, 0.1
        )

    def close(self) -> None:
        for w in self.workers:
            if w.proc.poll() is None:
                w.stop()
        self.client.close()
        self.sim.stop()


@pytest.fixture
def cxone(env: dict[str, str], log_dir: Path) -> Iterator[Callable[..., Cxone]]:
    made: list[Cxone] = []

    def make(**settings: str) -> Cxone:
        made.append(Cxone(env, log_dir, **settings))
        return made[-1]

    yield make
    for c in made:
        c.close()


def _events(record: StatusRecord) -> list[str]:
    return [h.event for h in record.history]


def test_a_callback_is_placed_through_the_discovered_api(cxone: Callable[..., Cxone]) -> None:
    cx = cxone()
    cx.start_worker()
    request_id = cx.enqueue(metadata={"ticket": "T-1"})

    record = cx.until(request_id, lambda r: r.state == "placed", "placed")
    assert record.attempts == 1
    [call] = calls_for(cx.sim, request_id)
    assert call["query"] == {"phoneNumber": NUMBER, "skill": SKILL, "targetAgent": AGENT}
    assert cx.sim.tokens()["discovery_requests"] == 1  # once for the token


def test_a_202_without_a_body_is_placed_and_a_lookup_finds_its_contact_id(
    cxone: Callable[..., Cxone],
) -> None:
    cx = cxone()
    cx.start_worker()
    request_id = cx.enqueue()

    record = cx.until(request_id, lambda r: r.conversation_id is not None, "its contactId")
    [call] = calls_for(cx.sim, request_id)
    assert record.state == "placed" and record.conversation_id == str(call["id"])
    events = _events(record)
    assert "call id found by lookup" in events  # the 202 had no body: the id came later
    assert "settled by lookup" not in events and "outcome unknown" not in events
    assert len(requests_for(cx.sim, request_id)) == 1  # never sent twice


def test_a_202_with_a_contact_id_keeps_it(cxone: Callable[..., Cxone]) -> None:
    cx = cxone()
    cx.start_worker()
    cx.sim.set_faults(by_number={NUMBER: ["202_body"]})
    request_id = cx.enqueue()
    record = cx.until(request_id, lambda r: r.state == "placed", "placed")
    assert record.conversation_id == calls_for(cx.sim, request_id)[0]["id"]


def test_errors_keep_cxones_text_and_throttles_are_retried(cxone: Callable[..., Cxone]) -> None:
    cx = cxone()
    cx.start_worker()
    cx.sim.set_faults(by_number={NUMBER: ["429_bare", "503", "400_header"]}, retry_after="1")
    request_id = cx.enqueue()

    record = cx.until(request_id, lambda r: r.state == "failed", "failed")
    assert [r["status"] for r in requests_for(cx.sim, request_id)] == [429, 503, 400]
    assert record.last_error is not None and record.last_error.status == 400
    assert record.last_error.message  # the icStatusDescription header's text
    assert calls_for(cx.sim, request_id) == []


def test_a_403_names_the_api_user_and_the_permission(cxone: Callable[..., Cxone]) -> None:
    cx = cxone(FOLLOWUP_CXONE_ACCESS_KEY_ID=NOCALLBACK_KEY)
    cx.start_worker()
    request_id = cx.enqueue()
    record = cx.until(request_id, lambda r: r.state == "failed", "failed")
    assert record.last_error is not None and record.last_error.status == 403
    assert "FOLLOWUP_CXONE_ACCESS_KEY_ID" in record.last_error.message


def test_a_read_timeout_after_cxone_took_the_callback_is_settled_by_a_lookup(
    cxone: Callable[..., Cxone],
) -> None:
    cx = cxone()
    cx.start_worker()
    cx.sim.set_faults(by_number={NUMBER: ["hang"]}, hang_s=5)
    request_id = cx.enqueue()

    record = cx.until(request_id, lambda r: r.state == "placed", "settled by a lookup")
    assert "outcome unknown" in _events(record) and "settled by lookup" in _events(record)
    [call] = calls_for(cx.sim, request_id)
    assert record.conversation_id == str(call["id"])
    assert len(requests_for(cx.sim, request_id)) == 1  # never sent twice


def test_a_callback_that_never_happened_stays_unknown(cxone: Callable[..., Cxone]) -> None:
    cx = cxone()
    cx.start_worker()
    first = cx.enqueue()
    cx.until(first, lambda r: r.state == "placed", "the first placed")
    cx.sim.set_faults(by_number={NUMBER: ["drop_before"]})
    second = cx.enqueue()  # the same agent, the same number: the first's contact is not its

    record = cx.until(second, lambda r: "lookups over" in _events(r), "the lookups to end")
    assert record.state == "unknown" and record.conversation_id is None
    assert _events(record).count("looked up") == 3
    assert len(requests_for(cx.sim, second)) == 1


def test_an_agent_id_that_is_not_a_number_is_never_sent(cxone: Callable[..., Cxone]) -> None:
    cx = cxone()
    with pytest.raises(InvalidRequest, match="user_id"):
        cx.enqueue(user="u-1001")  # the producer's settings say cxone
    cx.start_worker()
    request_id = str(uuid.uuid4())
    request = {"contact_id": "c-1", "user_id": "u-1001", "phone_number": NUMBER}
    foreign_client(cx.env["FOLLOWUP_BROKER_URL"]).send_task(
        "followup.place_call", kwargs={"request": request}, queue=cx.env["FOLLOWUP_QUEUE"],
        task_id=request_id,
    )  # fmt: skip
    record = cx.until(request_id, lambda r: r.state == "rejected", "rejected")
    assert record.last_error is not None and "user_id" in record.last_error.message
    assert cx.sim.requests() == []


def test_a_non_numeric_agent_id_from_a_producer_of_another_dialect_is_rejected(
    cxone: Callable[..., Cxone],
) -> None:
    cx = cxone()
    elsewhere = {k: v for k, v in cx.env.items() if not k.startswith("FOLLOWUP_CXONE_")}
    producer = FollowUpClient(load_settings({**elsewhere, "FOLLOWUP_API_DIALECT": "conversations"}))
    try:
        request_id = producer.enqueue(contact_id="c-1", user_id="u-1001", phone_number=NUMBER)
    finally:
        producer.close()
    cx.start_worker()

    record = cx.until(request_id, lambda r: r.state in ("rejected", "failed"), "its outcome")
    assert record.state == "rejected"
    assert record.last_error is not None and "user_id" in record.last_error.message
    assert record.attempts == 0
    assert cx.sim.requests() == []  # never sent


def test_a_cxone_worker_without_a_skill_does_not_start(cxone: Callable[..., Cxone]) -> None:
    cx = cxone()
    env = {**os.environ, **cx.env}
    env.pop("FOLLOWUP_API_BASE_URL", None)
    env.pop("FOLLOWUP_CXONE_SKILL_ID")
    worker = subprocess.run(
        [str(BIN / "celery"), "-A", "followup", "worker", "--without-mingle", "--without-gossip"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert worker.returncode != 0
    assert "Traceback" not in worker.stderr
    assert "FOLLOWUP_CXONE_SKILL_ID" in worker.stderr


def test_with_the_busy_check_on_an_agent_on_a_contact_is_not_rung(
    cxone: Callable[..., Cxone],
) -> None:
    cx = cxone(FOLLOWUP_CHECK_AGENT_BUSY="true", FOLLOWUP_AGENT_BUSY_RECHECK_S="1")
    cx.start_worker()
    asked_at = time.time()
    cx.sim.set_faults(busy_users={AGENT: 3})  # InboundContact for 3 s
    request_id = cx.enqueue()

    record = cx.until(request_id, lambda r: r.state == "placed", "placed after the contact")
    assert "waiting for agent_busy" in _events(record)
    assert calls_for(cx.sim, request_id)[0]["received_at"] >= asked_at + 3


def test_a_lookup_never_settles_a_request_with_a_callback_another_may_own(
    cxone: Callable[..., Cxone],
) -> None:
    """Two requests of one agent to one number sent within a lookup's window of each other:
    the first's POST was dropped, the second's callback is the only contact, and it could be
    either's. The first is left unknown for a person, never settled with the second's call
    (and the second, placed by its 202, gets no call id from a lookup that could be wrong)."""
    cx = cxone(
        FOLLOWUP_PER_USER_INTERVAL_S="0", FOLLOWUP_HTTP_TIMEOUT_S="5", FOLLOWUP_CLAIM_LEASE_S="25"
    )
    cx.sim.set_faults(by_number={NUMBER: ["drop_before", "ok"]})
    cx.start_worker()
    first = cx.enqueue()
    cx.until(first, lambda r: r.attempts >= 1, "the first sent")
    second = cx.enqueue()
    placed = cx.until(second, lambda r: r.state == "placed", "the second placed")

    record = cx.until(first, lambda r: "lookups over" in _events(r), "the first's lookups over")
    assert record.state == "unknown" and record.conversation_id is None
    assert any(
        h.event == "looked up" and second in (h.detail or "") and "either" in (h.detail or "")
        for h in record.history
    )
    assert placed.state == "placed" and calls_for(cx.sim, first) == []


def test_a_503_without_retry_after_is_a_throttle_that_slows_the_fleet(
    cxone: Callable[..., Cxone],
) -> None:
    """More 503s without Retry-After than FOLLOWUP_MAX_ATTEMPTS: no attempt spent, the
    request is placed once CXone takes it, and the fleet slowed down."""
    cx = cxone()
    worker = cx.start_worker()
    cx.sim.set_faults(by_number={NUMBER: ["503"] * 5 + ["ok"]})
    request_id = cx.enqueue()

    record = cx.until(request_id, lambda r: r.state == "placed", "placed")
    assert [r["status"] for r in requests_for(cx.sim, request_id)] == [503] * 5 + [202]
    assert record.attempts <= 1
    wait_until(
        lambda: "a throttle: the fleet slows down" in worker.log(), 30, "the slow-down logged"
    )


def test_a_token_without_a_tenant_waits_for_the_configuration_and_says_so_once(
    cxone: Callable[..., Cxone],
) -> None:
    """No tenantId and no FOLLOWUP_API_BASE_URL is a configuration error, not refused
    credentials: the request waits a due time (not handed round every second), nothing
    spent, and the worker says "set FOLLOWUP_API_BASE_URL" once."""
    cx = cxone()
    cx.sim.set_faults(token_script=["jwt_no_tenant"])
    worker = cx.start_worker()
    request_id = cx.enqueue()

    record = cx.until(request_id, lambda r: r.waiting_for == "credentials", "it waits")
    assert record.attempts == 0 and record.next_attempt_at is not None
    assert record.next_attempt_at.timestamp() - time.time() > 30  # a due time, not a loop
    assert record.last_error is not None and "FOLLOWUP_API_BASE_URL" in record.last_error.message
    wait_until(lambda: "set FOLLOWUP_API_BASE_URL" in worker.log(), 30, "the error logged")
    assert worker.log().count("configuration error: set FOLLOWUP_API_BASE_URL") == 1
    assert requests_for(cx.sim, request_id) == []


def test_the_ready_line_of_a_discovering_worker_says_so(cxone: Callable[..., Cxone]) -> None:
    cx = cxone()
    worker = cx.start_worker()
    line = wait_until(
        lambda: next((x for x in worker.log().splitlines() if "worker ready" in x), None),
        30,
        "the worker ready line",
    )
    assert "discovered per token" in line
