"""A Redis that fails over, on loopback: a primary, replicas and three Sentinels, each a real
redis-server process (`redis-server <conf> --sentinel` for the Sentinels)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import redis

from followup.cli.local_stack import PrivateRedis, die_with_parent, free_port, wait_until

SERVICE = "mymaster"


class FailoverRedis:
    """`url` is the store's redis+sentinel:// URL. Sentinels call the primary down after
    one second without an answer, and two of three must agree."""

    def __init__(self, replicas: int = 2, sentinels: int = 3) -> None:
        self.primary = PrivateRedis("--repl-diskless-sync-delay", "0")
        self.replicas = [
            PrivateRedis("--replicaof", "127.0.0.1", str(self.primary.port))
            for _ in range(replicas)
        ]
        self.dir = Path(tempfile.mkdtemp(prefix="followup-sentinel-"))
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.sentinels = [self._start_sentinel(port) for port in self.sentinel_ports]
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        self.url = f"redis+sentinel://{hosts}/{SERVICE}/0"
        wait_until(self._ready, 30, "the sentinels to see every replica and each other", 0.2)

    def _start_sentinel(self, port: int) -> subprocess.Popen[bytes]:
        conf = self.dir / f"sentinel-{port}.conf"  # Sentinel rewrites its file: one each
        conf.write_text(
            f"port {port}\n"
            "bind 127.0.0.1\n"
            f"dir {self.dir}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary.port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 10000\n"
        )
        return subprocess.Popen(
            [self.primary.server, str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )

    def _ask(self, port: int, *command: str) -> object:
        with redis.Redis(port=port, socket_timeout=1, decode_responses=True) as sentinel:
            return sentinel.execute_command(*command)

    def _ready(self) -> bool:
        """Every replica in sync with the primary, and every Sentinel sees them all."""
        try:
            with redis.Redis(port=self.primary.port, socket_timeout=1) as primary:
                links = primary.info("replication")
            online = [links.get(f"slave{i}", {}).get("state") for i in range(len(self.replicas))]
            return online == ["online"] * len(self.replicas) and all(
                len(self._ask(port, "SENTINEL", "REPLICAS", SERVICE)) == len(self.replicas)  # type: ignore[arg-type]
                and len(self._ask(port, "SENTINEL", "SENTINELS", SERVICE))  # type: ignore[arg-type]
                == len(self.sentinels) - 1
                for port in self.sentinel_ports
            )
        except redis.RedisError:
            return False

    def primary_port(self) -> int:
        """The port of the primary, as the first Sentinel sees it."""
        _, port = self._ask(self.sentinel_ports[0], "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)  # type: ignore[misc]
        return int(port)

    def stop(self) -> None:
        for proc in self.sentinels:
            proc.terminate()
            proc.wait(10)
        for server in [self.primary, *self.replicas]:
            server.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
