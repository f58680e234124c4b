"""The baseline worker: what a user would write without this project.

    NAIVE_BROKER_URL=redis://... NAIVE_API_BASE_URL=http://... NAIVE_QUEUE=q \\
        celery -A naive_worker worker          (from bench/; Celery's defaults: prefork, a
                                                process per core)

It builds the body and calls httpx.post, with autoretry_for=(httpx.HTTPError,) and
retry_backoff=True. It is given the benefit of the doubt: its token is fetched once per
process, not per call. No status store, no idempotency, no claim: a redelivered message is
dialled again.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

import httpx
from celery import Celery

API = os.environ.get("NAIVE_API_BASE_URL", "http://127.0.0.1:8765")
app = Celery("naive", broker=os.environ.get("NAIVE_BROKER_URL", "redis://localhost:6379/0"))
app.conf.task_default_queue = os.environ.get("NAIVE_QUEUE", "naive")


@cache
def token() -> str:
    answer = httpx.post(
        f"{API}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=("followup-demo", "demo-secret"),
    )
    answer.raise_for_status()
    return str(answer.json()["access_token"])


@app.task(name="naive.place_call", autoretry_for=(httpx.HTTPError,), retry_backoff=True)
def place_call(contact_id: str, user_id: str, phone_number: str) -> Any:
    body = {
        "from": {"id": user_id, "address": user_id, "addressType": "user"},
        "to": [{"id": contact_id, "address": phone_number, "addressType": "phone"}],
        "type": "outbound",
        "media": "audio",
    }
    answer = httpx.post(
        f"{API}/api/v2/conversations/calls",
        json=body,
        headers={"Authorization": f"Bearer {token()}"},
        timeout=10,
    )
    answer.raise_for_status()
    return answer.json()["id"]
