"""The baseline every capacity figure is measured against: create-call POSTs sent straight
at the simulator from threads sharing one httpx client (no broker, no store)."""

from __future__ import annotations

import threading
import time

import httpx

DEADLINE_S = 300.0
BODY = {
    "from": {"id": "u-1", "address": "u-1", "addressType": "user"},
    "to": [{"id": "c-1", "address": "+61298765432", "addressType": "phone"}],
    "type": "outbound",
    "media": "audio",
}


def bearer(sim_url: str) -> dict[str, str]:
    """The Authorization header for the simulator's demo client."""
    token = httpx.post(
        f"{sim_url}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=("followup-demo", "demo-secret"),
    ).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def direct_posts(sim_url: str, n: int, threads: int) -> float:
    """Seconds for n create-call POSTs straight at the simulator."""
    headers = bearer(sim_url)
    left = [n]
    lock = threading.Lock()
    with httpx.Client(limits=httpx.Limits(max_connections=threads)) as client:

        def run() -> None:
            while True:
                with lock:
                    if left[0] == 0:
                        return
                    left[0] -= 1
                client.post(
                    f"{sim_url}/api/v2/conversations/calls", json=BODY, headers=headers
                ).raise_for_status()

        started = time.perf_counter()
        pool = [threading.Thread(target=run) for _ in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join(DEADLINE_S)
        return time.perf_counter() - started
