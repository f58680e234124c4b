"""What not reusing connections costs: create-call POSTs against the simulator, one after
another, with keep-alive (FOLLOWUP_HTTP_KEEPALIVE_S=4, the default) and without (=0).

Baseline in the same run: httpx's own defaults (keep-alive 5 s, no deadline backend).
Usage: python bench/keepalive.py [N]
"""

from __future__ import annotations

import os
import platform
import sys
import time

import httpx
from direct import BODY, bearer

from followup.cli.local_stack import Simulator
from followup.worker.http import PlatformHttp

N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000


def rate(post: object, url: str, headers: dict[str, str], **kwargs: str) -> float:
    started = time.perf_counter()
    for _ in range(N):
        post("POST", url, json=BODY, headers=headers, **kwargs)  # type: ignore[operator]
    return N / (time.perf_counter() - started)


def main() -> None:
    sim = Simulator("--any-user")
    try:
        headers = bearer(sim.url)
        url = f"{sim.url}/api/v2/conversations/calls"
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cores, CPython "
            f"{platform.python_version()}; {N} sequential POSTs to the simulator on loopback"
        )
        with httpx.Client() as plain:
            print(f"baseline: httpx defaults            {rate(plain.request, url, headers):7.0f}/s")
        for keepalive in (4.0, 0.0):
            http = PlatformHttp(timeout_s=10, keepalive_s=keepalive, max_connections=4)
            print(
                f"followup, keep-alive {keepalive:g} s            "
                f"{rate(http.request, url, headers, endpoint='call'):7.0f}/s"
            )
            http.close()
    finally:
        sim.stop()


if __name__ == "__main__":
    main()
