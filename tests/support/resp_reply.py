"""A strict, incremental parser of what a RESP server sends back (RESP2 and RESP3).

hiredis.Reader is lenient on purpose (it takes any type anywhere); this one is not: it
checks every header's number as Redis writes it, every CRLF, the protocol version each
type belongs to, and that simple strings and errors hold no CR or LF. The fuzz tests use
it to prove that whatever a client sends, the bytes coming back stay a valid reply stream.
"""

from __future__ import annotations

import re
from typing import Final

from tests.support.resp_client import Reply

# Numbers as Redis writes them: no sign but a minus, no leading zeros, at most 64 bits.
_INT: Final = re.compile(rb"0|-?[1-9][0-9]{0,18}")
_COUNT: Final = re.compile(rb"0|[1-9][0-9]{0,18}")
_BIG: Final = re.compile(rb"0|-?[1-9][0-9]*")
# A double as RESP3 writes it (Python's repr, and inf/nan as the spec spells them).
_DOUBLE: Final = re.compile(rb"-?(inf|nan|[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?)")
# An error's first word is its code, in capitals (ERR, NOAUTH, WRONGPASS, TOOLARGE...).
_ERROR: Final = re.compile(rb"[A-Z][A-Z0-9_]*( [^\r\n]*)?")

_INT64: Final = 2**63
# No stashd reply nests deeper than COMMAND DOCS inside EXEC; anything past this is a bug.
MAX_DEPTH: Final = 16
# The largest bulk a reply may carry: Redis's proto-max-bulk-len.
MAX_BULK: Final = 512 * 1024 * 1024

RESP2_TYPES: Final = frozenset(b"+-:$*")
RESP3_TYPES: Final = frozenset(b"+-:$*_,#!=(%~")


class InvalidReply(ValueError):
    """The server sent bytes that are not a valid reply; carries where and what."""

    def __init__(self, reason: str, offset: int, data: bytes) -> None:
        start = max(0, offset - 40)
        super().__init__(f"{reason} at byte {offset}: {data[start : offset + 40]!r}")
        self.reason = reason
        self.offset = offset


class _Incomplete(Exception):
    """More bytes are needed (internal)."""


class ReplyParser:
    """Feed it bytes as they arrive; take complete replies with :meth:`next`.

    ``next(proto)`` parses one top-level reply under protocol ``proto`` (2 or 3; None
    accepts either, for a reply whose version cannot be known, such as HELLO's own) and
    returns it, or None while it has not all arrived. Invalid bytes raise
    :class:`InvalidReply`; the parser is then unusable.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._consumed = 0  # bytes of earlier replies, for offsets in messages
        self.replies = 0

    def feed(self, data: bytes) -> None:
        """Add bytes received from the server."""
        self._buf += data

    @property
    def pending(self) -> int:
        """Bytes received but not yet part of a complete reply."""
        return len(self._buf)

    def next(self, proto: int | None) -> Reply | None:
        """The next complete reply, or None until its last byte has arrived."""
        if not self._buf:
            return None
        types = RESP2_TYPES if proto == 2 else RESP3_TYPES
        if proto is None:
            types = RESP2_TYPES | RESP3_TYPES
        try:
            reply, end = self._parse(0, types, proto, 0)
        except _Incomplete:
            return None
        except InvalidReply as exc:
            raise InvalidReply(exc.reason, exc.offset + self._consumed, bytes(self._buf)) from None
        del self._buf[:end]
        self._consumed += end
        self.replies += 1
        return reply

    def _fail(self, reason: str, pos: int) -> InvalidReply:
        return InvalidReply(reason, pos, bytes(self._buf))

    def _line(self, pos: int) -> tuple[bytes, int]:
        """The header line starting at ``pos`` (without CRLF) and the offset after it."""
        buf = self._buf
        end = buf.find(b"\r\n", pos)
        if end < 0:
            stray = buf.find(b"\n", pos)
            if stray >= 0:
                raise self._fail("LF without CR in a header line", stray)
            if len(buf) - pos > 64 * 1024:
                raise self._fail("header line longer than 64 KiB", pos)
            raise _Incomplete
        line = bytes(buf[pos:end])
        if b"\n" in line or b"\r" in line:
            raise self._fail("CR or LF inside a line", pos)
        return line, end + 2

    def _number(self, line: bytes, pattern: re.Pattern[bytes], pos: int, what: str) -> int:
        if pattern.fullmatch(line, 1) is None:
            raise self._fail(f"{what} {line[1:]!r} is not a number as Redis writes it", pos)
        value = int(line[1:])
        if pattern is not _BIG and not -_INT64 <= value < _INT64:
            raise self._fail(f"{what} {value} does not fit 64 bits", pos)
        return value

    def _parse(
        self, pos: int, types: frozenset[int], proto: int | None, depth: int
    ) -> tuple[Reply, int]:
        buf = self._buf
        if pos >= len(buf):
            raise _Incomplete
        kind = buf[pos]
        if kind not in types:
            if kind in RESP3_TYPES:
                raise self._fail(f"RESP3 type {chr(kind)!r} on a RESP2 connection", pos)
            raise self._fail(f"no reply starts with {bytes([kind])!r}", pos)
        if depth > MAX_DEPTH:
            raise self._fail(f"replies nested deeper than {MAX_DEPTH}", pos)
        line, after = self._line(pos)
        k = chr(kind)
        if k == "+":
            return Reply(k, line[1:]), after
        if k == "-":
            if _ERROR.fullmatch(line, 1) is None:
                raise self._fail("an error reply must start with a code in capitals", pos)
            return Reply(k, line[1:]), after
        if k == ":":
            return Reply(k, self._number(line, _INT, pos, "integer")), after
        if k == "(":
            return Reply(k, self._number(line, _BIG, pos, "big number")), after
        if k == "_":
            if line != b"_":
                raise self._fail("null with trailing bytes", pos)
            return Reply(k, None), after
        if k == ",":
            if _DOUBLE.fullmatch(line, 1) is None:
                raise self._fail("not a double", pos)
            return Reply(k, float(line[1:])), after
        if k == "#":
            if line not in (b"#t", b"#f"):
                raise self._fail("a boolean is #t or #f", pos)
            return Reply(k, line == b"#t"), after
        if k in "$!=":
            if k == "$" and line == b"$-1":
                if proto == 3:
                    raise self._fail("RESP2 null bulk ($-1) on a RESP3 connection", pos)
                return Reply(k, None), after
            n = self._number(line, _COUNT, pos, "length")
            if n > MAX_BULK:
                raise self._fail(f"bulk of {n} bytes, over 512 MiB", pos)
            if len(buf) < after + n + 2:
                raise _Incomplete
            data = bytes(buf[after : after + n])
            if buf[after + n : after + n + 2] != b"\r\n":
                raise self._fail("bulk not followed by CRLF", after + n)
            if k == "=" and (n < 4 or data[3:4] != b":"):
                raise self._fail("verbatim string without its 3-byte format and ':'", pos)
            if k == "!" and _ERROR.fullmatch(data) is None:
                raise self._fail("a blob error must start with a code in capitals", pos)
            return Reply(k, data[4:] if k == "=" else data), after + n + 2
        # Aggregates: * (array), ~ (set), % (map: two replies per entry).
        if k == "*" and line == b"*-1":
            if proto == 3:
                raise self._fail("RESP2 null array (*-1) on a RESP3 connection", pos)
            return Reply(k, None), after
        n = self._number(line, _COUNT, pos, "count")
        items = 2 * n if k == "%" else n
        if items > len(buf) - after:
            # Every element takes at least 3 bytes; wait, but never for an absurd count.
            if items > 2**31:
                raise self._fail(f"aggregate of {n} elements", pos)
            raise _Incomplete
        children: list[Reply] = []
        p = after
        for _ in range(items):
            child, p = self._parse(p, types, proto, depth + 1)
            children.append(child)
        if k == "%":
            pairs = list(zip(children[::2], children[1::2], strict=True))
            return Reply(k, pairs), p
        return Reply(k, children), p
