"""What a misbehaving platform can do to us is bounded: odd answers are classified honestly,
waits and bodies are capped, tokens cannot leak, and a refused secret pauses, not burns.

Each case runs against the simulator's fault scripts or a raw-socket server, and asserts
the state, the attempts, the simulator's call count, and that no record, log line or status
output holds the number (in any format) or a token.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import phonenumbers
import pytest

from followup.cli.local_stack import Simulator, Worker, wait_until
from followup.config.settings import Settings, load_settings
from followup.tasks.producer import FollowUpClient
from followup.worker.http import PlatformHttp
from followup.worker.platforms.conversations.client import client_credentials
from followup.worker.records import StatusRecord
from followup.worker.runtime import Runtime
from followup.worker.tokens import TokenCache, TokenError
from tests.conftest import calls_for, followup, requests_for, unique
from tests.raw_servers import DrippingServer, IdleClosingServer

pytestmark = pytest.mark.integration
NUMBER = "+61298765432"


def number_forms(e164: str) -> list[str]:
    """What must never show: the number in each phonenumbers format, digits only, encoded."""
    parsed = phonenumbers.parse(e164)
    f = phonenumbers.PhoneNumberFormat
    forms = [phonenumbers.format_number(parsed, x) for x in (f.E164, f.INTERNATIONAL, f.NATIONAL)]
    return [*forms, e164[1:], e164.replace("+", "%2B"), e164[-8:]]


class Isolated:
    """A worker with a namespace and queue of its own (so its fleet-wide pauses and its
    token failures touch no other test), and a client for them."""

    def __init__(self, env: dict[str, str], start_worker: Callable[..., Worker]) -> None:
        self.env = env
        self.start_worker = start_worker
        suffix = uuid.uuid4().hex[:6]
        self.names = {
            "FOLLOWUP_NAMESPACE": f"{env['FOLLOWUP_NAMESPACE']}-{suffix}",
            "FOLLOWUP_QUEUE": f"{env['FOLLOWUP_QUEUE']}-{suffix}",
        }
        self.client = FollowUpClient(load_settings({**env, **self.names}))

    def worker(self, **overrides: str) -> Worker:
        return self.start_worker(**self.names, **overrides)

    def enqueue(self, contact: str | None = None) -> str:
        return self.client.enqueue(
            contact_id=contact or unique(), user_id="u-1001", phone_number=NUMBER
        )

    def wait(self, request_id: str, *states: str, timeout_s: float = 20) -> StatusRecord:
        def reached() -> StatusRecord | None:
            record = self.client.status(request_id)
            return record if record and record.state in states else None

        return wait_until(reached, timeout_s, f"{request_id} in {states}")


@pytest.fixture
def isolated(env: dict[str, str], start_worker: Callable[..., Worker]) -> Iterator[Isolated]:
    box = Isolated(env, start_worker)
    yield box
    box.client.close()


def assert_nothing_leaks(texts: list[str], tokens: list[str] = ()) -> None:  # type: ignore[assignment]
    for text in texts:
        for form in number_forms(NUMBER):
            assert form not in text, form
        for token in tokens:
            assert token not in text


def test_a_huge_retry_after_is_capped_and_odd_ones_do_not_crash(
    isolated: Isolated, sim: Simulator
) -> None:
    worker = isolated.worker(FOLLOWUP_MAX_RETRY_AFTER_S="2")
    huge, twenty_digits, superscript = unique(), unique(), unique()
    sim.set_faults(
        by_contact={huge: ["429"], twenty_digits: ["503"], superscript: ["429"]},
        retry_after="999999999",
    )
    first = isolated.enqueue(huge)
    record = isolated.wait(first, "placed")
    sent = requests_for(sim, first)
    assert [r["status"] for r in sent] == [429, 201]
    assert sent[1]["at"] - sent[0]["at"] < 30  # the cap (2 s), not 31 years
    assert "Retry-After past FOLLOWUP_MAX_RETRY_AFTER_S" in worker.log()

    for contact, value in ((twenty_digits, "12345678901234567890"), (superscript, "²")):
        sim.set_faults(
            by_contact={contact: ["503" if contact == twenty_digits else "429"]}, retry_after=value
        )
        request_id = isolated.enqueue(contact)
        record = isolated.wait(request_id, "placed")
        assert record.attempts >= 1
        assert [r["status"] for r in requests_for(sim, request_id)][-1] == 201


@pytest.mark.parametrize("status", ["408", "425"])
def test_408_and_425_are_retried(
    worker: Worker, sim: Simulator, client: FollowUpClient, wait_for: Any, status: str
) -> None:
    contact = unique()
    sim.set_faults(by_contact={contact: [status]})
    request_id = client.enqueue(contact_id=contact, user_id="u-1001", phone_number=NUMBER)
    record = wait_for(request_id, "placed")
    assert [r["status"] for r in requests_for(sim, request_id)] == [int(status), 201]
    assert len(calls_for(sim, request_id)) == 1
    assert record.attempts == 2


@pytest.mark.parametrize("fault", ["204", "201_empty", "201_no_id", "200_html", "201_deep"])
def test_a_2xx_without_an_id_is_unknown_and_says_why(
    worker: Worker, sim: Simulator, client: FollowUpClient, wait_for: Any, fault: str
) -> None:
    contact = unique()
    sim.set_faults(by_contact={contact: [fault]})
    request_id = client.enqueue(contact_id=contact, user_id="u-1001", phone_number=NUMBER)
    record = wait_for(request_id, "unknown")
    assert record.last_error is not None
    assert record.last_error.code == "response.no_id"
    assert record.last_error.status == int(fault[:3])
    assert record.conversation_id is None
    assert calls_for(sim, request_id) == []  # nobody was called; nothing says otherwise
    assert record.attempts == 1


@pytest.mark.parametrize(("fault", "errors"), [("huge_400", 0), ("many_errors_400", 11)])
def test_huge_error_bodies_make_small_records_and_log_lines(
    worker: Worker, sim: Simulator, client: FollowUpClient, wait_for: Any, fault: str, errors: int
) -> None:
    """10 MB is cut at the read bound (then it is not JSON: its start is kept); 1,000
    errors[] fit, and ten are kept with a line saying how many more."""
    contact = unique()
    sim.set_faults(by_contact={contact: [fault]})
    request_id = client.enqueue(contact_id=contact, user_id="u-1001", phone_number=NUMBER)
    record = wait_for(request_id, "failed")
    assert record.last_error is not None
    assert len(record.last_error.message) <= 300
    assert len(record.last_error.errors) == errors
    stored = client.store.redis.hstrlen(f"{client.store.ns}:req:{request_id}", "last_error")
    assert stored < 5000
    assert max(len(line) for line in worker.log().splitlines()) < 5000


def test_the_number_echoed_back_in_any_format_is_masked_everywhere(
    worker: Worker, sim: Simulator, client: FollowUpClient, wait_for: Any
) -> None:
    contact = unique()
    sim.set_faults(by_contact={contact: ["echo_number"]})
    request_id = client.enqueue(contact_id=contact, user_id="u-1001", phone_number=NUMBER)
    record = wait_for(request_id, "failed")
    status = followup("status", request_id, "--json", check=True).stdout
    listing = followup("list", "--state", "failed", "--json", check=True).stdout
    assert record.last_error is not None and record.last_error.code.startswith("callee.")
    assert_nothing_leaks([record.model_dump_json(), status, listing, worker.log()])


def test_a_wrong_client_secret_pauses_dialling_and_burns_nothing(
    isolated: Isolated, sim: Simulator
) -> None:
    wrong = isolated.worker(FOLLOWUP_CLIENT_SECRET="not-the-secret")
    ids = [isolated.enqueue() for _ in range(3)]
    for request_id in ids:
        record = isolated.wait(request_id, "scheduled")
        assert record.waiting_for == "credentials"
        assert record.attempts == 0
    log = wrong.log()
    assert "refused the OAuth client credentials" in log
    assert "FOLLOWUP_CLIENT_ID, FOLLOWUP_CLIENT_SECRET" in log
    assert "client authentication failed" in log  # the platform's error_description
    status = followup("status", ids[0], env=isolated.names, check=True).stdout
    assert "waiting for credentials" in status
    assert all(calls_for(sim, i) == [] for i in ids)

    wrong.stop()
    isolated.worker()  # restarted with the right secret: its first token ends the pause
    for request_id in ids:
        record = isolated.wait(request_id, "placed", timeout_s=30)
        assert record.attempts == 1
        assert len(calls_for(sim, request_id)) == 1


@pytest.mark.parametrize("fault", ["token_crlf", "token_null", "token_unicode", "token_deep"])
def test_an_unusable_token_is_never_sent_nor_shown(
    isolated: Isolated, sim: Simulator, fault: str
) -> None:
    sim.set_faults(token_script=[fault])  # the worker's first token is unusable, then good
    worker = isolated.worker()
    request_id = isolated.enqueue()
    record = isolated.wait(request_id, "placed")
    assert [r["status"] for r in requests_for(sim, request_id)] == [201]  # sent once
    assert record.attempts == 1
    assert "outcome unknown" not in [h.event for h in record.history]
    assert "X-Injected" not in worker.log()
    assert_nothing_leaks([record.model_dump_json(), worker.log()], list(sim.tokens()["tokens"]))


def test_tokens_nested_too_deep_make_requests_wait_not_fail(
    isolated: Isolated, sim: Simulator
) -> None:
    """{"access_token": [[[...]]]} 5000 deep (json.loads alone raises RecursionError), for
    the warm-up's fetch and the request's next ones: a token error, so the request waits,
    spends no attempt and is placed once a token is had."""
    sim.set_faults(token_script=["token_deep"] * 4)
    worker = isolated.worker()
    request_id = isolated.enqueue()
    record = isolated.wait(request_id, "placed", timeout_s=30)
    assert record.attempts == 1
    assert [r["status"] for r in requests_for(sim, request_id)] == [201]
    assert sim.tokens()["token_requests"] >= 5
    assert "RecursionError" not in worker.log()


def test_a_refusal_nested_too_deep_still_pauses_for_credentials_and_burns_nothing(
    isolated: Isolated, sim: Simulator
) -> None:
    """A 401 whose `error` is [[[...]]] 5000 deep (json.loads alone raises RecursionError):
    still a refusal, read as well as it can be."""
    sim.set_faults(token_script=["refusal_deep"])
    worker = isolated.worker()
    request_id = isolated.enqueue()
    record = isolated.wait(request_id, "scheduled")
    assert record.waiting_for == "credentials"
    assert record.attempts == 0
    assert record.last_error is not None and record.last_error.code == "token.http.401"
    assert requests_for(sim, request_id) == []
    assert "RecursionError" not in worker.log()


def test_a_hanging_token_endpoint_is_asked_once_for_all_waiting_threads(
    settings: Settings, sim: Simulator
) -> None:
    http = PlatformHttp(timeout_s=0.5, keepalive_s=4, max_connections=16)
    tokens = TokenCache(http, client_credentials(settings), max_retry_after_s=300)
    before = sim.tokens()["token_requests"]
    sim.set_faults(token_latency_s=3)

    def get(_: int) -> TokenError | str:
        try:
            return tokens.get()
        except TokenError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(get, range(8)))
    assert all(isinstance(r, TokenError) for r in results)
    assert sim.tokens()["token_requests"] == before + 1  # one fetch, its failure shared
    failure = results[0]
    assert isinstance(failure, TokenError)
    assert failure.verdict.kind == "retry"
    assert "may have reached" not in failure.verdict.summary  # a token fetch changes nothing
    http.close()


def test_the_token_endpoints_retry_after_is_honoured(settings: Settings, sim: Simulator) -> None:
    http = PlatformHttp(timeout_s=2, keepalive_s=4, max_connections=4)
    tokens = TokenCache(http, client_credentials(settings), max_retry_after_s=300)
    sim.set_faults(token_script=["429"], retry_after="30")
    with pytest.raises(TokenError) as first:
        tokens.get()
    assert first.value.verdict.retry_after_s == 30
    asked = sim.tokens()["token_requests"]
    with pytest.raises(TokenError):
        tokens.get()  # within the 30 s: not asked again
    assert sim.tokens()["token_requests"] == asked
    http.close()


def test_stale_keep_alive_connections_are_never_written_into() -> None:
    """The server closes a connection idle for 0.4 s; calls come 0.35 to 0.45 s apart, the
    worst case for a client that keeps connections longer. Kept 0.1 s, none is lost."""
    server = IdleClosingServer(idle_s=0.4)
    http = PlatformHttp(timeout_s=2, keepalive_s=0.1, max_connections=4)
    try:
        lost = 0
        for n in range(24):
            try:
                assert (
                    http.request("POST", server.url, endpoint="call", json={"n": n}).status == 201
                )
            except httpx.HTTPError:
                lost += 1
            time.sleep(0.35 + (n % 3) * 0.05)  # the spacing that meets the server's closing
        assert lost == 0
        assert server.requests == 24
    finally:
        http.close()
        server.close()


def test_headers_sent_in_drips_cannot_outlast_the_deadline() -> None:
    server = DrippingServer(interval_s=0.05)  # 10,000 bytes of headers: over 8 minutes
    http = PlatformHttp(timeout_s=0.5, keepalive_s=4, max_connections=4)
    try:
        with pytest.raises(httpx.ReadTimeout):
            http.request("POST", server.url, endpoint="call", json={})
    finally:
        http.close()
        server.close()


def test_a_dripping_platform_makes_the_worker_record_unknown_itself_within_its_lease(
    settings: Settings, client: FollowUpClient, private_queue: str
) -> None:
    """Without a total deadline the attempt would hang past the claim's lease and the
    sweeper would have to guess; with it, the worker records the outcome itself."""
    server = DrippingServer(interval_s=0.05)
    dripping = settings.model_copy(
        update={"api_base_url": server.url, "token_url": settings.effective_token_url}
    )
    runtime = Runtime(dripping)
    try:
        request = {"contact_id": unique(), "user_id": "u-1001", "phone_number": NUMBER}
        request_id = client.enqueue(request, queue=private_queue)
        assert runtime.pipeline.handle(request_id, (), {"request": request}) == "unknown"
        record = client.status(request_id)
        assert record is not None
        events = [h.event for h in record.history]
        assert "outcome unknown" in events
        assert "claim expired after sending" not in events
        assert record.last_error is not None
        assert record.last_error.code == "transport.ReadTimeout"
    finally:
        runtime.close()
        server.close()


def test_a_foreign_messages_reason_and_metadata_never_reach_the_worker_log(
    worker: Worker, client: FollowUpClient, queue_name: str, redis_url: str, wait_for: Any
) -> None:
    from celery import Celery

    crm = Celery("crm", broker=redis_url, set_as_current=False)
    sent = crm.send_task(
        "followup.place_call",
        queue=queue_name,
        kwargs={
            "request": {
                "contact_id": unique(),
                "user_id": "u-1001",
                "phone_number": NUMBER,
                "reason": "call Jane Doe back",
                "metadata": {"email": "jane.doe@example.com"},
            }
        },
    )
    wait_for(sent.id, "placed")
    log = worker.log()  # at DEBUG, where Celery prints each task's arguments
    assert sent.id in log
    for value in ("Jane Doe", "jane.doe@example.com", *number_forms(NUMBER)):
        assert value not in log
