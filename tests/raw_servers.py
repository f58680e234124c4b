"""HTTP servers on raw sockets that misbehave in ways aiohttp will not: closing idle
keep-alive connections on a timer, and dripping response headers a byte at a time."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time

from followup.cli.local_stack import free_port


class RawServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests = 0
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.2)
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._closed.set()
        self._server.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def _read_request(self, conn: socket.socket, timeout: float | None) -> bool:
        """Read one request (headers, and a body by Content-Length); False if none came."""
        conn.settimeout(timeout)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return False
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            while len(body) < length:
                body += conn.recv(65536)
        except (TimeoutError, OSError):
            return False
        with self._lock:
            self.requests += 1
        return True


class IdleClosingServer(RawServer):
    """Keeps connections alive, and closes one that stays idle for idle_s: the race a
    client reusing it just then loses."""

    def __init__(self, idle_s: float) -> None:
        self.idle_s = idle_s
        super().__init__()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            first = True
            while self._read_request(conn, None if first else self.idle_s):
                first = False
                body = json.dumps({"id": f"conv-{self.requests}"}).encode()
                conn.sendall(
                    b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )


class DrippingServer(RawServer):
    """Answers with its status line and headers one byte every interval_s, for ever."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        super().__init__()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            if not self._read_request(conn, 5):
                return
            head = b"HTTP/1.1 201 Created\r\n" + b"X-Slow: " + b"a" * 10_000
            with contextlib.suppress(OSError):
                for byte in head:
                    if self._closed.is_set():
                        return
                    conn.sendall(bytes([byte]))
                    time.sleep(self.interval_s)
