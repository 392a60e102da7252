"""The wire: a framing guard that vets requests before hiredis parses them, and reply encoding.

hiredis.Reader is a *reply* parser: it would accept ``+OK`` or maps as requests, reserve
memory for a ``*2000000000`` header at once, never limit ``$N`` and stay broken after one
error. So :class:`RequestReader` walks the headers itself, checks every request is an
array of bulk strings within the caller's caps, and only then hands the vetted bytes to
hiredis, which slices out the arguments in C. Inline commands (``PING`` typed into nc)
are split here, as Redis does.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Final

import hiredis

from stashd.errors import PayloadTooLarge, ProtocolError, QueryBufferFull, StashError

# Arguments per request after AUTH. Redis takes up to 1M, but every argument costs a
# microsecond or more of the one loop every client shares (MGET of 16,384 keys runs in
# about 20 ms here, of 1M keys in seconds), so one request may hold 16,384: enough for any
# MGET/MSET/DEL a client batches, small enough that nobody else waits long behind it.
MAX_ARGS: Final = 16 * 1024
# Redis's ceiling per bulk, 512 MiB. Before AUTH in strict mode Redis allows 10 arguments
# of 16 KiB, which stops an anonymous peer from making the server buffer anything sizeable.
MAX_BULK: Final = 512 * 1024 * 1024
PREAUTH_MAX_ARGS: Final = 10
PREAUTH_MAX_BULK: Final = 16 * 1024
# An inline request is one line typed by a person; Redis caps it at 64 KiB.
MAX_INLINE: Final = 64 * 1024
# Bounds what one connection can make us buffer for a single unfinished request (its
# query buffer), as Redis's client-query-buffer-limit does; the daemon sets its own.
MAX_REQUEST_BYTES: Final = 1024 * 1024 * 1024

# Redis's bound on a multibulk count; a count past it is "invalid", before AUTH or not.
_INT_MAX: Final = 2**31 - 1

# The fast path is for reads of small requests only; anything with this many arguments
# (or a count that is not small) is vetted by the strict scan.
FAST_MAX_ARGS: Final = 1000

Request = list[bytes]


# What only the strict scan may handle, found anywhere in a read by two literal-prefixed
# regexes and a substring test (cheap; an alternation under one character class costs
# several times more): an aggregate header with four or more digits, which hiredis would
# allocate for before its items arrive; a line starting with a type that no request
# contains (simple and verbatim strings, integers, doubles, booleans, nulls, big
# numbers, errors, maps, sets, pushes, attributes); and a null bulk ("$-1"). A bulk
# whose payload starts with one of those characters only costs a strict scan, never a
# wrong answer. A bulk header needs no other check here: a bulk wholly inside the read
# is already in memory, and one that is not leaves the read unfinished, which sends it
# to the strict scan.
_BIG_AGGREGATE: Final = re.compile(rb"\*-?\d{4}")
_ODD_TYPE: Final = re.compile(rb"\n[-+=%~>|:,#_(!]")
# A regex finds "$-" several times faster than ``in``, which stops at every "$".
_NULL_BULK: Final = re.compile(rb"\$-")


@functools.cache
def _long_bulk(max_payload: int) -> re.Pattern[bytes]:
    """A bulk header with as many digits as ``max_payload``: it may be over the limit.

    The fast path does not see bulk lengths, so such a read takes the strict scan, which
    answers TOOLARGE for a bulk over the limit whatever the command; a length with fewer
    digits is always within it.
    """
    return re.compile(rb"\$\d{%d}" % len(str(max_payload)))


#: Reads up to this long are checked with one combined pattern (:func:`_suspect`): for
#: a short read one pass is about three times cheaper than four, while on a long one
#: the alternation defeats the literal scan each pattern alone makes, and the four
#: separate searches are about twice as fast.
SHORT_READ: Final = 256


@functools.cache
def _suspect(max_payload: int) -> re.Pattern[bytes]:
    """The fast path's four checks as one pattern: a match sends a read to the strict scan."""
    return re.compile(
        b"|".join(
            p.pattern for p in (_BIG_AGGREGATE, _ODD_TYPE, _NULL_BULK, _long_bulk(max_payload))
        )
    )


class RequestReader:
    """Turns bytes from one connection into requests, refusing what Redis would refuse.

    :meth:`feed` returns every request completed by the new bytes, in order. An item is a
    list of arguments, or a :class:`PayloadTooLarge` error for a request that carried a bulk over
    the payload limit (its bytes were skipped, never buffered), or, last, a
    :class:`ProtocolError` after which the connection must be answered and closed.

    Two paths give the same answers. The strict scan walks every header in Python, which
    costs microseconds a request. The fast path serves the common case, a read that holds
    only whole requests: two regexes prove that no header in the read can make hiredis
    reserve memory ahead of data and that no item is a non-bulk string, hiredis parses,
    and a type check proves each request is a flat array of strings. A read that fails
    any of that, or ends inside a request, is scanned strictly from its first byte (it
    started at a request boundary), and the strict scan keeps the connection until it is
    back at a boundary with nothing held. Like Redis, the fast path does not look at the
    two bytes after a bulk; the strict scan requires them to be CRLF.
    """

    __slots__ = (
        "_args_left",
        "_buf",
        "_hiredis",
        "_long",
        "_oversize",
        "_pos",
        "_req_bytes",
        "_short",
        "_skip",
        "_start",
        "_strict",
        "_unauth",
        "max_args",
        "max_bulk",
        "max_payload",
        "max_request",
    )

    def __init__(
        self,
        *,
        max_args: int = MAX_ARGS,
        max_bulk: int = MAX_BULK,
        max_payload: int = MAX_BULK,
        max_request: int = MAX_REQUEST_BYTES,
    ) -> None:
        self.max_args = max_args
        self.max_bulk = max_bulk
        # A bulk over this (but within max_bulk) is skipped and answered with TOOLARGE
        # instead of being buffered: the pre-read gate.
        self.max_payload = max_payload
        self._long = _long_bulk(max_payload)
        self._short = _suspect(max_payload)
        self.max_request = max_request
        self._unauth = False  # under the pre-auth caps, whose errors Redis words its own way
        self._buf = bytearray()
        self._hiredis = hiredis.Reader()
        self._args_left = 0  # arguments still to come in the current multibulk request
        self._start = -1  # offset of the current request in _buf, -1 between requests
        self._pos = 0  # where scanning resumes inside an unfinished request
        self._skip = 0  # bytes of an oversized bulk still to be dropped as they arrive
        self._oversize: PayloadTooLarge | None = None
        self._req_bytes = 0  # bytes the current request will make us hold, so far
        self._strict = False  # True while an unfinished request is held by the strict scan

    def set_limits(
        self,
        *,
        max_args: int,
        max_bulk: int,
        max_payload: int,
        max_request: int = MAX_REQUEST_BYTES,
        authenticated: bool = True,
    ) -> None:
        """Change the caps, e.g. once a connection has authenticated."""
        self.max_args = max_args
        self.max_bulk = max_bulk
        self.max_payload = max_payload
        self._long = _long_bulk(max_payload)
        self._short = _suspect(max_payload)
        self.max_request = max_request
        self._unauth = not authenticated

    @property
    def idle(self) -> bool:
        """At a request boundary with nothing held: the next byte starts a request."""
        return not self._strict

    def feed(self, data: bytes) -> list[Request | StashError]:
        """Take new bytes; return the requests (or per-request errors) they complete."""
        if (
            self._strict
            or not data
            or data[0] != 42  # '*'
            or self.max_args < FAST_MAX_ARGS
            or (
                self._short.search(data) is not None
                if len(data) <= SHORT_READ
                else _BIG_AGGREGATE.search(data) is not None
                or _ODD_TYPE.search(data) is not None
                or _NULL_BULK.search(data) is not None
                or self._long.search(data) is not None
            )
        ):
            return self._feed_strict(data)
        reader = self._hiredis
        reader.feed(data)
        # hiredis cannot say whether it stopped at a request boundary (has_data() is
        # False after a lone "*"), so a sentinel empty request follows the read: it comes
        # back as a trailing [] only if hiredis was at a boundary; otherwise it lands
        # inside the unfinished request and the read goes to the strict scan below.
        reader.feed(b"*0\r\n")
        # Every array header has a '*', so when hiredis returns one top-level array per
        # '*' in the read (plus the sentinel) no array is nested in another, and the line
        # check above leaves bulk strings as the only possible arguments. A '*' inside a
        # payload only sends the read to the strict scan. (Counting one byte is several
        # times cheaper than counting the two-byte "\n*".)
        headers = data.count(42) + 1
        out: list[Request | StashError] = []
        last: object = None
        seen = 0
        try:
            item = reader.gets()
            while item is not False:
                if type(item) is not list:
                    raise TypeError
                seen += 1
                if item:
                    out.append(item)
                last = item
                item = reader.gets()
            if last == [] and seen == headers:
                return out
        except (hiredis.ProtocolError, TypeError):
            pass
        # Something about this read needs the strict scan: start it over from the read's
        # first byte, which was a request boundary, with a reader that holds nothing.
        self._hiredis = hiredis.Reader()
        return self._feed_strict(data)

    def _feed_strict(self, data: bytes) -> list[Request | StashError]:
        """Vet every header in Python; see the class docstring."""
        if self._skip:
            # Still dropping an oversized bulk: consume what we can without keeping it.
            take = min(self._skip, len(data))
            self._skip -= take
            data = data[take:]
            if not data:
                return []
        buf = self._buf
        buf += data
        out: list[Request | StashError] = []
        size = len(buf)
        # Resume inside an unfinished request, or start at the first unread byte.
        pos = self._pos if self._start >= 0 else 0
        feed_from = self._start if self._oversize is None else -1
        while pos < size:
            if self._start < 0:
                if buf[pos] != 42:  # not '*': an inline command
                    end = buf.find(b"\n", pos)
                    if end < 0:
                        if size - pos > MAX_INLINE:
                            self._flush(buf, feed_from, pos, out)
                            out.append(ProtocolError("too big inline request"))
                            return self._fail(out)
                        break
                    self._flush(buf, feed_from, pos, out)
                    feed_from = -1
                    line = bytes(buf[pos:end]).rstrip(b"\r")
                    pos = end + 1
                    try:
                        args = split_inline(line)
                    except ProtocolError as exc:
                        out.append(exc)
                        return self._fail(out)
                    if args:
                        out.append(args)
                    continue
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    if size - pos > MAX_INLINE:
                        self._flush(buf, feed_from, pos, out)
                        out.append(ProtocolError("too big mbulk count string"))
                        return self._fail(out)
                    break
                count = _header_int(buf, pos + 1, end, _INT_MAX + 1)
                if count > self.max_args:
                    self._flush(buf, feed_from, pos, out)
                    # Redis's words: before AUTH it names the cause, and a count past
                    # INT_MAX is nonsense; past our own cap we say which cap.
                    if count > _INT_MAX:
                        detail = "invalid multibulk length"
                    elif self._unauth:
                        detail = "unauthenticated multibulk length"
                    else:
                        detail = f"request has {count} arguments, the limit is {self.max_args}"
                    out.append(ProtocolError(detail))
                    return self._fail(out)
                if count <= 0:
                    # Redis ignores empty multibulk requests ("*0" and "*-1").
                    self._flush(buf, feed_from, pos, out)
                    feed_from = -1
                    pos = end + 2
                    continue
                if feed_from < 0:
                    feed_from = pos
                self._start = pos
                self._args_left = count
                self._req_bytes = end + 2 - pos
                pos = end + 2
            # Inside a multibulk request: one "$len\r\n<bytes>\r\n" per argument.
            while self._args_left and pos < size:
                if buf[pos] != 36:  # '$'
                    self._flush(buf, feed_from, self._start, out)
                    out.append(ProtocolError(f"expected '$', got '{chr(buf[pos])}'"))
                    return self._fail(out)
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    if size - pos > 32:
                        self._flush(buf, feed_from, self._start, out)
                        out.append(ProtocolError("too big bulk count string"))
                        return self._fail(out)
                    break
                length = _header_int(buf, pos + 1, end, -1)
                if length < 0 or length > self.max_bulk:
                    self._flush(buf, feed_from, self._start, out)
                    out.append(
                        ProtocolError(
                            "unauthenticated bulk length"
                            if self._unauth and 0 <= length <= MAX_BULK
                            else "invalid bulk length"
                        )
                    )
                    return self._fail(out)
                # The query buffer holds the request's headers and the bulks it keeps;
                # an oversized bulk's bytes are dropped as they come, so they do not count.
                self._req_bytes += end + 2 - pos
                if length <= self.max_payload:
                    self._req_bytes += length + 2
                if self._req_bytes > self.max_request:
                    self._flush(buf, feed_from, self._start, out)
                    out.append(QueryBufferFull(self.max_request, self._req_bytes))
                    return self._fail(out)
                if length > self.max_payload:
                    # Pre-read gate: remember the refusal and drop this bulk's bytes as
                    # they come; the rest of the request is vetted and dropped as well.
                    if self._oversize is None:
                        self._flush(buf, feed_from, self._start, out)
                        feed_from = -1
                        self._oversize = PayloadTooLarge(self.max_payload, length)
                    have = size - (end + 2)
                    need = length + 2
                    self._args_left -= 1
                    del buf[end + 2 : end + 2 + need]
                    if have < need:
                        self._skip = need - have
                    size = len(buf)
                    pos = end + 2
                    if self._skip:
                        break
                    continue
                stop = end + 2 + length
                if stop + 2 > size:
                    # Not all here yet: scanning resumes at this header when more
                    # arrives and counts it again then, so it must not count twice.
                    self._req_bytes -= end + 2 - pos + length + 2
                    break
                if buf[stop] != 13 or buf[stop + 1] != 10:
                    self._flush(buf, feed_from, self._start, out)
                    out.append(ProtocolError("bulk length does not match the data sent"))
                    return self._fail(out)
                pos = stop + 2
                self._args_left -= 1
            if self._args_left:
                break  # wait for more bytes of this request
            # The request is complete.
            if self._oversize is not None:
                out.append(self._oversize)
                self._oversize = None
                feed_from = -1
            self._start = -1
        if self._start >= 0:
            # Keep only the unfinished request, rebased to offset 0.
            self._flush(buf, feed_from, self._start, out)
            self._pos = pos - self._start
            del buf[: self._start]
            self._start = 0
        else:
            self._flush(buf, feed_from, pos, out)
            del buf[:pos]
        # Back at a boundary with nothing held: the next read may take the fast path.
        self._strict = bool(buf) or self._skip > 0 or self._oversize is not None
        return out

    def _flush(
        self, buf: bytearray, start: int, stop: int, out: list[Request | StashError]
    ) -> None:
        """Give the vetted requests in buf[start:stop] to hiredis and collect them."""
        if start < 0 or stop <= start:
            return
        reader = self._hiredis
        reader.feed(buf, start, stop - start)  # type: ignore[arg-type] # takes any buffer
        item = reader.gets()
        while item is not False:
            out.append(item)
            item = reader.gets()

    def _fail(self, out: list[Request | StashError]) -> list[Request | StashError]:
        # After a protocol error the connection is closed; drop everything it sent.
        self._buf.clear()
        self._start = -1
        self._args_left = 0
        self._skip = 0
        self._oversize = None
        return out


# A header's number as Redis's string2ll reads it: an optional minus, then digits with
# no leading zero ("0" alone aside), no plus, no spaces, no underscores (which int()
# would take), so "*02" or "$+1" is refused here just as hiredis and Redis refuse it.
_HEADER_INT: Final = re.compile(rb"0|-?[1-9][0-9]{0,18}")


def _header_int(buf: bytearray, start: int, end: int, invalid: int) -> int:
    """The number in ``buf[start:end]``, or ``invalid`` when Redis would not read one."""
    if _HEADER_INT.fullmatch(buf, start, end) is None:
        return invalid
    return int(buf[start:end])


_ESCAPES: Final = {
    ord("n"): 10,
    ord("r"): 13,
    ord("t"): 9,
    ord("b"): 8,
    ord("a"): 7,
}
_HEX: Final = frozenset(b"0123456789abcdefABCDEF")


def split_inline(line: bytes) -> list[bytes]:
    """Split an inline command line the way Redis's sdssplitargs does (quotes, escapes)."""
    args: list[bytes] = []
    i = 0
    n = len(line)
    while True:
        while i < n and line[i] in b" \t\r\n\v\f":
            i += 1
        if i >= n:
            return args
        cur = bytearray()
        in_dq = in_sq = False
        while True:
            if in_dq:
                if i >= n:
                    raise ProtocolError("unbalanced quotes in request")
                c = line[i]
                if (
                    c == 92
                    and i + 3 < n
                    and line[i + 1] == ord("x")
                    and line[i + 2] in _HEX
                    and line[i + 3] in _HEX
                ):
                    cur.append(int(line[i + 2 : i + 4], 16))
                    i += 3
                elif c == 92 and i + 1 < n:
                    i += 1
                    cur.append(_ESCAPES.get(line[i], line[i]))
                elif c == 34:
                    if i + 1 < n and line[i + 1] not in b" \t\r\n\v\f":
                        raise ProtocolError("unbalanced quotes in request")
                    i += 1
                    break
                else:
                    cur.append(c)
            elif in_sq:
                if i >= n:
                    raise ProtocolError("unbalanced quotes in request")
                c = line[i]
                if c == 92 and i + 1 < n and line[i + 1] == 39:
                    i += 1
                    cur.append(39)
                elif c == 39:
                    if i + 1 < n and line[i + 1] not in b" \t\r\n\v\f":
                        raise ProtocolError("unbalanced quotes in request")
                    i += 1
                    break
                else:
                    cur.append(c)
            else:
                if i >= n:
                    break
                c = line[i]
                if c in b" \t\r\n\v\f":
                    break
                if c == 34:
                    in_dq = True
                elif c == 39:
                    in_sq = True
                else:
                    cur.append(c)
            i += 1
        args.append(bytes(cur))


# ---------------------------------------------------------------------------------------
# Replies. Commands return plain Python values; the connection's protocol picks the bytes:
#   bytes -> bulk string     str -> simple string    int -> integer     None -> null
#   bool -> boolean (RESP2: 1/0)   float -> double (RESP2: bulk)   list/tuple -> array
#   dict -> map (RESP2: flat array)   set/frozenset -> set (RESP2: array)
#   StashError -> error      Verbatim -> verbatim text (RESP2: bulk)
#   Score -> double in Redis's "%.17g" form (RESP2: bulk), for sorted-set scores only
#   Push -> push (RESP2: array)   Replies -> each of its items, one after another
# ---------------------------------------------------------------------------------------

Reply = Any

OK: Final = "OK"
NULL2: Final = b"$-1\r\n"
NULL3: Final = b"_\r\n"


class _NullArray:
    """The 'no result' of EXEC after a WATCHed key changed: ``*-1`` in RESP2, ``_`` in RESP3."""

    __slots__ = ()


NULL_ARRAY: Final = _NullArray()


class Verbatim(str):
    """Text that RESP3 sends as a verbatim string (INFO, CLIENT INFO), RESP2 as a bulk."""

    __slots__ = ()


class Score(float):
    """A sorted-set score, sent as Redis formats one: ``%.17g`` (0.1 is 0.10000000000000001).

    A plain float keeps its shortest ``repr`` form; scores are a type of their own so
    that exactly the replies Redis writes with its double formatter read the same here.
    """

    __slots__ = ()

    def text(self) -> bytes:
        """The score as Redis writes it: ``inf`` and ``-inf`` for the infinities."""
        return b"%.17g" % self


class Push(list[Any]):
    """Out-of-band data (a pub/sub message or confirmation): RESP3 ``>``, RESP2 an array."""

    __slots__ = ()


class Replies(tuple[Any, ...]):
    """Several replies to one request, written one after another (SUBSCRIBE a b)."""

    __slots__ = ()


class ReplyTooLarge(Exception):
    """Encoding passed the caller's limit; ``out`` holds a part of the reply, to be dropped."""


def encode(value: Any, proto: int, out: bytearray, limit: int | None = None) -> None:  # noqa: ANN401 - any reply
    """Append the wire form of ``value`` for protocol 2 or 3 to ``out``.

    With ``limit``, an array stops with :class:`ReplyTooLarge` as soon as ``out`` passes
    it, so a reply too large to send (MGET of many large values) is never built whole.
    """
    t = type(value)
    if t is bytes:
        out += b"$%d\r\n%b\r\n" % (len(value), value)
    elif t is int:
        out += b":%d\r\n" % value
    elif value is None:
        out += NULL3 if proto == 3 else NULL2
    elif t is str:
        out += b"+%b\r\n" % value.encode()
    elif t is list or t is tuple:
        out += b"*%d\r\n" % len(value)
        for item in value:
            encode(item, proto, out, limit)
            if limit is not None and len(out) > limit:
                raise ReplyTooLarge
    elif t is dict:
        items = value.items()
        out += (b"%%%d\r\n" if proto == 3 else b"*%d\r\n") % (
            len(items) if proto == 3 else 2 * len(items)
        )
        for k, v in items:
            encode(k, proto, out)
            encode(v, proto, out)
    elif isinstance(value, StashError):
        out += b"-%b\r\n" % _one_line(value.wire).encode()
    elif t is bool:
        if proto == 3:
            out += b"#t\r\n" if value else b"#f\r\n"
        else:
            out += b":1\r\n" if value else b":0\r\n"
    elif t is float:
        text = repr(value).encode()
        if proto == 3:
            out += b",%b\r\n" % text
        else:
            out += b"$%d\r\n%b\r\n" % (len(text), text)
    elif t is Score:
        text = value.text()
        if proto == 3:
            out += b",%b\r\n" % text
        else:
            out += b"$%d\r\n%b\r\n" % (len(text), text)
    elif t is set or t is frozenset:
        out += (b"~%d\r\n" if proto == 3 else b"*%d\r\n") % len(value)
        # Sorted, so a reply (COMMAND INFO's flags) reads the same in every process:
        # Python's set order depends on the process's hash seed.
        for item in sorted(value):
            encode(item, proto, out)
    elif t is Verbatim:
        body = value.encode()
        if proto == 3:
            out += b"=%d\r\ntxt:%b\r\n" % (len(body) + 4, body)
        else:
            out += b"$%d\r\n%b\r\n" % (len(body), body)
    elif t is Push:
        out += (b">%d\r\n" if proto == 3 else b"*%d\r\n") % len(value)
        for item in value:
            encode(item, proto, out, limit)
    elif t is Replies:
        for item in value:
            encode(item, proto, out, limit)
    elif value is NULL_ARRAY:
        out += NULL3 if proto == 3 else b"*-1\r\n"
    else:  # pragma: no cover - a command returned a type we never produce
        msg = f"cannot encode reply of type {t.__name__}"
        raise TypeError(msg)


def _one_line(text: str) -> str:
    """Errors and simple strings must not contain CR or LF, or the stream desyncs."""
    return text.replace("\r", " ").replace("\n", " ")
