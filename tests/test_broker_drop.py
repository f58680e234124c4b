"""A RabbitMQ connection that drops with tasks in flight: their acks cannot go, the broker
redelivers them, and the status store answers each redelivery busy/done. One warning says
so; not a critical line and a traceback per task."""

from __future__ import annotations

from typing import Any

import pytest

from followup.cli.local_stack import delete_broker_queue, wait_until
from followup.config.settings import load_settings
from followup.tasks.producer import FollowUpClient
from tests.conftest import RABBITMQ_URL, calls_for, rabbitmq_url, unique
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration

IN_FLIGHT = 4


def test_a_broker_drop_with_tasks_in_flight_is_one_warning_and_nothing_lost(
    env: dict[str, str], start_worker: Any, private_queue: str, sim: Any, wait_for: Any
) -> None:
    rabbitmq_url()  # skipped (or failed under CI=true) where no RabbitMQ answers
    port = int(RABBITMQ_URL.rsplit(":", 1)[1].split("/", 1)[0])
    proxy = TcpProxy(port)
    client = FollowUpClient(
        load_settings({**env, "FOLLOWUP_BROKER_URL": RABBITMQ_URL, "FOLLOWUP_QUEUE": private_queue})
    )
    broker = RABBITMQ_URL.replace(f":{port}", f":{proxy.port}")
    try:
        worker = start_worker(
            FOLLOWUP_BROKER_URL=broker,
            FOLLOWUP_QUEUE=private_queue,
            FOLLOWUP_HTTP_TIMEOUT_S="8",
            FOLLOWUP_CLAIM_LEASE_S="40",
        )
        sim.set_faults(call_latency_s=3)
        ids = [
            client.enqueue(contact_id=unique(), user_id="u-1001", phone_number="+61298765432")
            for _ in range(IN_FLIGHT)
        ]
        wait_until(lambda: len(sim.requests()) >= IN_FLIGHT, 20, "every call in flight", 0.05)
        proxy.drop()
        for request_id in ids:
            assert wait_for(request_id, "placed", timeout_s=60).state == "placed"
        wait_until(
            lambda: "nothing is lost" in worker.log().lower(),
            30,
            "the worker's warning about the drop",
        )
        log = worker.log()
        assert "Couldn't ack" not in log, log
        assert "[critical" not in log.lower(), log
        assert log.lower().count("nothing is lost") == 1, log
        assert "Traceback" not in log, log
        for request_id in ids:
            assert len(calls_for(sim, request_id)) == 1
    finally:
        delete_broker_queue(client.settings)
        client.close()
        proxy.close()
