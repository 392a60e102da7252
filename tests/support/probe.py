"""A well-behaved client in a process of its own, timing round trips while others attack.

Run as ``python tests/support/probe.py resp|http PORT [--key KEY] [--interval S]``. It
connects, prints ``ready`` once its first round trip has worked, then sends a PING over
RESP (with AUTH first when given a key) or a keep-alive ``GET /healthz`` over HTTP,
one at a time, every ``--interval`` seconds, until its stdin is closed. It then prints
one JSON line: every round trip in seconds and every failure (a wrong answer, a closed
connection, a timeout), and exits.

A process of its own, so what it measures is the server: in the test's process the
fuzzer's own work would hold the GIL and add to every round trip. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from collections.abc import Callable

# A round trip this slow is a stall: counted as a failure, and the probe reconnects.
TIMEOUT = 30.0


class RespPing:
    def __init__(self, port: int, key: str | None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        if key:
            raw = key.encode()
            self.sock.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%b\r\n" % (len(raw), raw))
            line = self._line()
            if line != b"+OK":
                msg = f"AUTH answered {line!r}"
                raise ConnectionError(msg)

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                msg = "the server closed the connection"
                raise ConnectionError(msg)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def round_trip(self) -> None:
        self.sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        line = self._line()
        if line != b"+PONG":
            msg = f"PING answered {line!r}"
            raise ConnectionError(msg)

    def close(self) -> None:
        self.sock.close()


class HttpHealth:
    REQUEST = b"GET /healthz HTTP/1.1\r\nHost: probe\r\n\r\n"

    def __init__(self, port: int, key: str | None) -> None:  # noqa: ARG002 - same shape as RespPing
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            msg = "the server closed the connection"
            raise ConnectionError(msg)
        self.buf += chunk

    def round_trip(self) -> None:
        self.sock.sendall(self.REQUEST)
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        if not lines[0].startswith("HTTP/1.1 200"):
            msg = f"GET /healthz answered {lines[0]!r}"
            raise ConnectionError(msg)
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        while len(self.buf) < length:
            self._fill()
        self.buf = self.buf[length:]

    def close(self) -> None:
        self.sock.close()


def main() -> int:
    """Probe until stdin closes; print the figures as one JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("door", choices=("resp", "http"))
    parser.add_argument("port", type=int)
    parser.add_argument("--key")
    parser.add_argument("--interval", type=float, default=0.01)
    args = parser.parse_args()
    make: Callable[[int, str | None], RespPing | HttpHealth] = (
        RespPing if args.door == "resp" else HttpHealth
    )
    stop = threading.Event()

    def wait_for_eof() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    rtts: list[float] = []
    failures: list[str] = []
    client = make(args.port, args.key)
    client.round_trip()
    print("ready", flush=True)
    while not stop.is_set():
        start = time.perf_counter()
        try:
            client.round_trip()
        except (OSError, ValueError) as exc:
            elapsed = time.perf_counter() - start
            failures.append(f"{type(exc).__name__}: {exc} after {elapsed:.3f} s")
            rtts.append(elapsed)
            client.close()
            try:
                client = make(args.port, args.key)
            except OSError as again:
                failures.append(f"reconnect: {again}")
                stop.wait(0.1)  # pacing the retries of a server that is gone
            continue
        rtts.append(time.perf_counter() - start)
        stop.wait(args.interval)  # pacing between probes, ended at once by stdin's EOF
    client.close()
    print(json.dumps({"rtts": rtts, "failures": failures}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
