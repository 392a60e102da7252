"""A tiny exact RESP client for tests: keeps every reply's type (hiredis does not)."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Reply:
    """One reply: its RESP type byte and its value (children for aggregates)."""

    kind: str
    value: Any

    def render(self) -> str:
        """Canonical one-line text, as the conformance cases write replies."""
        k, v = self.kind, self.value
        if v is None and k in ("$", "*", "_", "=", "~", "%"):
            return "(nil)"
        if k == "+":
            return f"+{v.decode()}"
        if k == "-":
            return f"-{v.decode()}"
        if k in (":", "("):
            return f":{v}"
        if k in ("$", "="):
            return "$" + repr(v)[1:]
        if k == ",":
            return f",{v}"
        if k == "#":
            return "#t" if v else "#f"
        if k in ("*", "~", ">"):
            return "[" + ", ".join(c.render() for c in v) + "]"
        if k == "%":
            return "{" + ", ".join(f"{a.render()}: {b.render()}" for a, b in v) + "}"
        return f"{k}{v!r}"


CLOSED = Reply("closed", None)


class RespClient:
    """Send commands and read typed replies over a plain socket."""

    def __init__(
        self,
        port: int,
        host: str = "127.0.0.1",
        timeout: float = 5.0,
        source: str | None = None,
    ) -> None:
        # ``source`` picks the client address (any of 127.0.0.0/8 reaches a loopback
        # server), so per-address rules can be tested from one machine.
        self.sock = socket.create_connection(
            (host, port), timeout=timeout, source_address=None if source is None else (source, 0)
        )
        self.buf = b""

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    def send(self, *args: bytes | str | int) -> None:
        """Send one request as an array of bulk strings."""
        parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
        out = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%b\r\n" % (len(p), p) for p in parts)
        self.sock.sendall(out)

    def send_raw(self, data: bytes) -> None:
        """Send bytes as they are."""
        self.sock.sendall(data)

    def call(self, *args: bytes | str | int) -> Reply:
        """Send one request and read its reply."""
        self.send(*args)
        return self.read()

    def _fill(self) -> bool:
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return False
        if not chunk:
            return False
        self.buf += chunk
        return True

    def _line(self) -> bytes | None:
        while b"\r\n" not in self.buf:
            if not self._fill():
                return None
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n: int) -> bytes | None:
        while len(self.buf) < n + 2:
            if not self._fill():
                return None
        data, self.buf = self.buf[:n], self.buf[n + 2 :]
        return data

    def read(self) -> Reply:
        """Read one reply; ``CLOSED`` when the server closed the connection first."""
        line = self._line()
        if line is None:
            return CLOSED
        kind, rest = chr(line[0]), line[1:]
        if kind in "+-":
            return Reply(kind, rest)
        if kind in ":(":
            return Reply(kind, int(rest))
        if kind == ",":
            # The text as sent, so a case compares a double byte for byte (0.1 is
            # "0.10000000000000001" from Redis's formatter, "0.1" from a shortest one).
            return Reply(kind, rest.decode())
        if kind == "#":
            return Reply(kind, rest == b"t")
        if kind == "_":
            return Reply(kind, None)
        if kind in "$=!":
            n = int(rest)
            if n < 0:
                return Reply(kind, None)
            data = self._exact(n)
            if data is None:
                return CLOSED
            return Reply(kind, data[4:] if kind == "=" else data)
        if kind in "*~>":
            n = int(rest)
            if n < 0:
                return Reply(kind, None)
            return Reply(kind, [self.read() for _ in range(n)])
        if kind == "%":
            n = int(rest)
            return Reply(kind, [(self.read(), self.read()) for _ in range(n)])
        msg = f"unexpected reply type {kind!r}"
        raise ValueError(msg)
