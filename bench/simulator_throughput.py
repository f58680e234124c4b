"""Requests per second the simulator answers on loopback, and a naive baseline in the same run.

The load: POST /api/v2/conversations/calls with a valid token and body (the whole path:
auth, JSON, E.164 check, recording the call), from an aiohttp client with keep-alive and
CONCURRENCY requests in flight, for DURATION_S seconds. The baseline: Python's http.server as
it comes (ThreadingHTTPServer, HTTP/1.1 keep-alive, headers and body in two writes, no
TCP_NODELAY) answering the same JSON; design.md measured ~22 req/s for it.

    .venv/bin/python bench/simulator_throughput.py [DURATION_S] [CONCURRENCY]
"""

from __future__ import annotations

import asyncio
import json
import platform
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import aiohttp
import httpx

from followup.cli.local_stack import Simulator, free_port

BODY = {
    "from": {"id": "u-67890", "address": "u-67890", "addressType": "user"},
    "to": [{"id": "c-12345", "address": "+61298765432", "addressType": "phone"}],
    "type": "outbound",
    "media": "audio",
}


async def load(
    url: str, headers: dict[str, str], duration_s: float, concurrency: int
) -> tuple[int, int]:
    ok = errors = 0
    deadline = time.monotonic() + duration_s
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one_client() -> None:
            nonlocal ok, errors
            while time.monotonic() < deadline:
                async with session.post(url, json=BODY, headers=headers) as response:
                    await response.read()
                    if response.status < 300:
                        ok += 1
                    else:
                        errors += 1

        await asyncio.gather(*(one_client() for _ in range(concurrency)))
    return ok, errors


def token(sim_url: str) -> str:
    response = httpx.post(
        f"{sim_url}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=("followup-demo", "demo-secret"),
    )
    return str(response.json()["access_token"])


def load_httpx(url: str, headers: dict[str, str], duration_s: float, concurrency: int) -> int:
    """The worker's own client: one pooled httpx.Client shared by `concurrency` threads."""
    count = [0] * concurrency
    deadline = time.monotonic() + duration_s
    with httpx.Client(limits=httpx.Limits(max_connections=concurrency)) as client:

        def run(n: int) -> None:
            while time.monotonic() < deadline:
                client.post(url, json=BODY, headers=headers).raise_for_status()
                count[n] += 1

        threads = [threading.Thread(target=run, args=(n,)) for n in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(duration_s + 30)
    return sum(count)


class NaiveHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        payload = json.dumps({"id": "x", "selfUri": "/x"}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    duration_s = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    concurrency = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    print(
        f"machine: {platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}, duration {duration_s:g}s, concurrency {concurrency}"
    )

    sim = Simulator()
    try:
        headers = {"Authorization": f"Bearer {token(sim.url)}"}
        ok, errors = asyncio.run(
            load(f"{sim.url}/api/v2/conversations/calls", headers, duration_s, concurrency)
        )
        print(f"simulator, aiohttp client:   {ok / duration_s:8,.0f} req/s ({errors} errors)")
        n = load_httpx(f"{sim.url}/api/v2/conversations/calls", headers, duration_s, concurrency)
        print(f"simulator, httpx client:     {n / duration_s:8,.0f} req/s")
    finally:
        sim.stop()

    port = free_port()
    naive = ThreadingHTTPServer(("127.0.0.1", port), NaiveHandler)
    threading.Thread(target=naive.serve_forever, daemon=True).start()
    try:
        ok, errors = asyncio.run(load(f"http://127.0.0.1:{port}/", {}, duration_s, concurrency))
        print(f"http.server, aiohttp client: {ok / duration_s:8,.0f} req/s ({errors} errors)")
        n = load_httpx(f"http://127.0.0.1:{port}/", {}, duration_s, concurrency)
        print(f"http.server, httpx client:   {n / duration_s:8,.0f} req/s")
    finally:
        naive.shutdown()


if __name__ == "__main__":
    main()
