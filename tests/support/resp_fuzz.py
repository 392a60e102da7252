"""A seeded fuzzer of RESP request streams, and the campaign that turns it on a real daemon.

Frames come from a grammar of the real commands (GET, SET, MSET, MGET, DEL, EXPIRE,
SCAN, KEYS, MULTI/EXEC/WATCH, HELLO, AUTH, CLIENT, STASH, RECALL, UPDATE, FORGET and
the rest of stashd's table) with random and boundary arguments (keys and values with
NULs and CR/LF, numbers at every 32- and 64-bit edge, globs that used to backtrack, JSON
nested past any parser's recursion, payloads at the limit), plus inline commands and
frames no client should send (RESP3 types, bad lengths, huge counts, HTTP). Then bytes
are flipped, inserted, deleted and duplicated. Each session's stream is cut at random
points across writes, and several sessions run at once.

Every frame knows how many replies it gets as long as the stream is as generated (one,
or none for an empty inline line), or that it cannot be known (None: a protocol error, a
mutation, anything after which the server may close). Up to the first such frame the
replies are paired with the requests: exactly one each, in order, in the protocol the
connection is in (RESP2 types only before HELLO 3), never a protocol error for a valid
request. After it, whatever comes back must still be valid RESP, and the connection must
end once the client half-closes. A clean session waits for all its replies and then
for the end of the stream: a reply too many, or too few, is a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from stashd.registry import SQLiteRegistry
from stashd.tenancy import issue_key
from tests.support.resp_client import Reply, RespClient
from tests.support.resp_reply import InvalidReply, ReplyParser
from tests.support.watched import Latencies, Probe, WatchedDaemon

# What the campaign's daemons are configured with (short TTLs keep the stores small, so
# KEYS and SCAN stay cheap however long the campaign runs).
DEFAULT_TTL: Final = 20
MAX_TTL: Final = 120
PAYLOAD: Final = 64 * 1024
# stashd's (and Redis's) caps before AUTH in strict mode.
PREAUTH_ARGS: Final = 10
PREAUTH_BULK: Final = 16 * 1024
# An inline line longer than this may be refused before its newline arrives (64 KiB).
INLINE_SAFE: Final = 60_000
# Failed AUTHs an address may make before it is blocked (10 at once, SPEC "Strict mode"):
# later AUTH frames may close the connection, so they end the paired part.
AUTH_FAILURES_PAIRED: Final = 8
# A campaign stops after this many failing sessions: enough to see a bug's shapes, and
# each stall has already cost a session's timeout.
MAX_FAILURES: Final = 5
# Failing sessions whose bytes are kept for the report.
KEEP_FAILURES: Final = 20

Args = list[bytes]


def encode(args: Args) -> bytes:
    """An array of bulk strings, as clients send requests."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)


def inline(args: Args, end: bytes = b"\r\n") -> bytes:
    """The same request as an inline line, quoted so Redis's sdssplitargs gives ``args``."""
    words = []
    for a in args:
        if a and all(33 <= c <= 126 and c not in b"\"'\\" for c in a):
            words.append(a)
        else:
            words.append(
                b'"'
                + b"".join(
                    bytes([c]) if 32 <= c <= 126 and c not in b'"\\' else b"\\x%02x" % c for c in a
                )
                + b'"'
            )
    return b" ".join(words) + end


@dataclass(slots=True)
class Frame:
    """One request as sent, and what the client can know about its replies."""

    data: bytes
    replies: int | None = 1  # None: unknowable from here on
    name: bytes = b""  # lower-case command name, for the protocol bookkeeping
    hello: int = 0  # the protocol version a HELLO asks for, 0 for none
    closes: bool = False  # QUIT: the server closes after its reply


@dataclass
class Role:
    """Who a session is: its opening request and what the grammar may assume."""

    name: str
    opening: Args | None  # sent and answered before the fuzz frames
    key: bytes | None  # the registered key it authenticated with (strict mode)
    preauth: bool  # strict mode, not authenticated: the pre-auth caps apply
    proto: int = 2


NUMBERS: Final = [
    *(b"0", b"1", b"-1", b"2", b"10", b"59", b"60", b"119", b"120", b"121", b"3600"),
    *(b"86400", b"2147483647", b"2147483648", b"-2147483649", b"4294967296"),
    *(b"9223372036854775807", b"9223372036854775808", b"-9223372036854775808"),
    *(b"-9223372036854775809", b"18446744073709551616", b"9223372036854775"),
    *(b"9223372036854776", b"-9223372036854776", b"99999999999999999999999"),
    *(b"", b" ", b"abc", b"1.5", b"1e3", b"+1", b"-0", b"01", b" 1", b"1 ", b"0x10"),
    *("\u0663".encode(), b"1_000", b"9" * 400, b"\x001", b"inf", b"nan"),
]
KEYS: Final = [b"k%d" % i for i in range(8)]
ODD_KEYS: Final = [
    *(b"", b"\x00", b"\r\n", b"a b", b"*", b"?", b"[", b"\\", b"\xff\xfe", b"{tag}k0"),
    *(b"a" * 1000, b"\x00" * 64, b"*1\r\n$4\r\nPING\r\n", b"k0\r\n"),
]
JSON_DOCS: Final = [
    *(b'{"task":"summarize"}', b"[1,2,3]", b'"s"', b"1", b"true", b"false", b"null"),
    *(b'{"a":{"b":[1,{"c":null}]}}', b"{}", b"[]", b' {"a" : 1} ', b'{"a":1e400}'),
    *(b'{"a":NaN}', b"[Infinity]", b'{"a":"\\ud800"}', b'"\xff\xfe"', b"\xef\xbb\xbf{}"),
    *(b"{bad", b"", b'{"a":1}{"b":2}', b"[" * 1200 + b"]" * 1200, b"[1,]", b"{'a':1}"),
    *(b'{"a":' * 600 + b"1" + b"}" * 600, b"1" + b"0" * 5000, b"-" + b"9" * 4400),
    *(b"0." + b"1" * 5000, b"1e" + b"9" * 400, b'{"\x00":1}', b'"a\\u0000b"'),
    *(b'{"a":1,"a":2}', b"\t\n\r 1 \n", b'{"a":null,"b":{"c":null}}', b'"\\x41"'),
    *(b"123456789012345678901234567890", b"-0", b"1E+2", b'"\\uDC00\\uD800"'),
]
PATTERNS: Final = [
    *(b"*", b"k*", b"?", b"k[0-3]", b"[^k]*", b"\\", b"[", b"[a-", b"]", b"[]", b"[^]"),
    *(b"*a*a*a*a*a*a*a*a*a*a*a*a*a*b", b"*" * 2000 + b"x", b"[" * 1000, b"[a-z]" * 2000),
    *(b"*" + b"a*" * 1200 + b"b", b"?" * 3000, b"[^" * 3000, b"\\" * 5000, b"\x00*"),
    *(b"k\\*", b"*k0", b"*\r\n*", b"[\xff-\x00]*", b"[z-a]", b"a" * 1000 + b"*"),
]
# Bytes that mean something in RESP, for mutations to insert.
SIGNIFICANT: Final = b"\r\n*$:+-_,#!=(%~>|0123456789 \x00\xff\"'\\"


class Grammar:
    """Random requests of stashd's commands, for one session at a time."""

    def __init__(self, rng: random.Random, *, strict: bool, payload: int = PAYLOAD) -> None:
        self.rng = rng
        self.strict = strict
        self.payload = payload
        self.role: Role = Role("none", None, None, preauth=False)
        self.auth_attempts = 0
        self.preauth = False
        c = self._commands()
        self.names = [n for n, _, _ in c]
        self.makers = {n: m for n, _, m in c}
        self.weights = [w for _, w, _ in c]

    def start(self, role: Role) -> None:
        """Begin a session in ``role``."""
        self.role = role
        self.auth_attempts = 0
        self.preauth = role.preauth

    # -- arguments --------------------------------------------------------------------
    def key(self) -> bytes:
        r = self.rng.random()
        if r < 0.85:
            return self.rng.choice(KEYS)
        if r < 0.97:
            return self.rng.choice(ODD_KEYS)
        return self.rng.randbytes(self.rng.randint(1, 24))

    def keys(self, most: int = 6) -> Args:
        n = self.rng.choice((1, 1, 2, 3, most, self.rng.randint(1, 1000)))
        return [self.key() for _ in range(n)]

    def number(self) -> bytes:
        if self.rng.random() < 0.5:
            return b"%d" % self.rng.randint(-5, MAX_TTL + 5)
        return self.rng.choice(NUMBERS)

    def at(self, ms: bool) -> bytes:
        now = time.time()
        if self.rng.random() < 0.3:
            return self.number()
        t = now + self.rng.choice((-10, 0, 1, 30, MAX_TTL, MAX_TTL + 1, 10**9))
        return b"%d" % (t * 1000 if ms else t)

    def json(self) -> bytes:
        if self.rng.random() < 0.5:
            return self.rng.choice(JSON_DOCS)
        return json.dumps(self._doc(3)).encode()

    def _doc(self, depth: int) -> object:
        r = self.rng.random()
        if depth == 0 or r < 0.4:
            return self.rng.choice((1, -2.5, "x", "\u00e9\x00", None, True, 2**70))
        if r < 0.7:
            return [self._doc(depth - 1) for _ in range(self.rng.randint(0, 3))]
        return {
            self.rng.choice(("a", "b", "", "\r\n")): self._doc(depth - 1)
            for _ in range(self.rng.randint(0, 3))
        }

    def value(self) -> bytes:
        r = self.rng.random()
        if r < 0.4:
            return self.rng.choice((b"", b"v", b"0", b"-1", b"9223372036854775807", b"x\r\ny"))
        if r < 0.6:
            return self.json()
        if r < 0.95:
            return self.rng.randbytes(self.rng.randint(0, 200))
        if r < 0.98:
            size = self.rng.choice((PREAUTH_BULK, PREAUTH_BULK + 1, 1000, 30_000))
        else:
            size = self.rng.choice((self.payload - 1, self.payload, self.payload + 1))
        return b"x" * size

    def pattern(self) -> bytes:
        r = self.rng.random()
        if r < 0.8:
            return self.rng.choice(PATTERNS)
        if r < 0.9:
            return self.key()
        return self.rng.randbytes(self.rng.randint(0, 30))

    def ttl_option(self) -> Args:
        opt = self.rng.choice((b"EX", b"PX", b"EXAT", b"PXAT", b"KEEPTTL", b"ex", b"XX"))
        if opt in (b"EXAT", b"PXAT"):
            return [opt, self.at(opt == b"PXAT")]
        if opt in (b"KEEPTTL", b"XX"):
            return [opt]
        return [opt, self.number()]

    def junk(self) -> bytes:
        """Any argument at all."""
        return self.rng.choice((self.key, self.value, self.number, self.pattern))()

    # -- commands ---------------------------------------------------------------------
    def _commands(self) -> list[tuple[bytes, float, Callable[[], Args]]]:
        rng = self.rng
        k, v, n = self.key, self.value, self.number

        def opts(*choices: Callable[[], Args]) -> Args:
            out: Args = []
            for _ in range(rng.choice((0, 0, 1, 1, 2, 3))):
                out += rng.choice(choices)()
            return out

        def expire_flags() -> Args:
            return [rng.choice((b"NX", b"XX", b"GT", b"LT", b"nx", b"YY"))]

        def scan() -> Args:
            cursor = rng.choice((b"0", b"0", n(), b"18446744073709551616", b"abc"))
            return [
                cursor,
                *opts(
                    lambda: [b"MATCH", self.pattern()],
                    lambda: [b"COUNT", rng.choice((b"0", b"1", b"10", b"1000", n()))],
                    lambda: [b"TYPE", rng.choice((b"string", b"hash", b"none", b""))],
                    lambda: [self.junk()],
                ),
            ]

        def update() -> Args:
            return [
                k(),
                *opts(
                    lambda: [b"DATA", self.json()],
                    lambda: [b"MERGE", self.json()],
                    lambda: [b"EXTEND", n()],
                    lambda: [b"IFVERSION", rng.choice((b"1", b"2", n()))],
                    lambda: [rng.choice((b"DATA", b"EXTEND", b"WITHMETA"))],
                ),
            ]

        def client() -> Args:
            return rng.choice(
                (
                    [b"SETNAME", rng.choice((b"fuzz", b"a b", b"", b"\x00", b"x" * 300))],
                    [b"GETNAME"],
                    [b"ID"],
                    [b"INFO"],
                    [b"LIST"],
                    [b"LIST", b"TYPE", b"normal"],
                    [b"SETINFO", b"LIB-NAME", rng.choice((b"redis-py", b"a b", b""))],
                    [b"SETINFO", b"LIB-VER", b"8.0.0"],
                    [b"SETINFO", b"NOPE", b"x"],
                    [b"NO-EVICT", rng.choice((b"on", b"off", b"x"))],
                    [b"NO-TOUCH", b"on"],
                    [b"MAINT_NOTIFICATIONS", b"on", b"moving-endpoint-type", b"internal-ip"],
                    [b"REPLY", rng.choice((b"ON", b"OFF", b"SKIP", b"x"))],
                    [b"HELP"],
                    [b"KILL", b"127.0.0.1:1"],
                    [b"PAUSE", b"10"],
                    [b"TRACKING", b"on"],
                    [self.junk()],
                )
            )

        def command() -> Args:
            return rng.choice(
                (
                    [],
                    [b"COUNT"],
                    [b"LIST"],
                    [b"INFO", b"get", b"set", b"nope"],
                    [b"DOCS", b"get"],
                    [b"HELP"],
                    [b"GETKEYS", b"set", b"a", b"b"],
                    [self.junk()],
                )
            )

        def unknown() -> Args:
            return [
                rng.choice((b"MONITOR", b"EVAL", b"FOO", b"", b"\x00", b"\r\n")),
                *opts(lambda: [self.junk()]),
            ]

        def wrong_arity() -> Args:
            name = rng.choice(self.names)
            return [name, *(self.junk() for _ in range(rng.choice((0, 1, 4, 7))))]

        return [
            (b"get", 8, lambda: [k()]),
            (b"set", 10, lambda: [k(), v(), *opts(self.ttl_option, lambda: [b"NX"], lambda: [b"GET"])]),
            (b"mset", 3, lambda: [x for _ in range(rng.choice((1, 2, 3, 50))) for x in (k(), v())]
             + ([k()] if rng.random() < 0.1 else [])),
            (b"mget", 3, lambda: self.keys()),
            (b"del", 3, lambda: self.keys()),
            (b"unlink", 1, lambda: self.keys()),
            (b"exists", 2, lambda: self.keys()),
            (b"expire", 3, lambda: [k(), n(), *opts(expire_flags)]),
            (b"pexpire", 2, lambda: [k(), n(), *opts(expire_flags)]),
            (b"expireat", 1, lambda: [k(), self.at(False), *opts(expire_flags)]),
            (b"pexpireat", 1, lambda: [k(), self.at(True), *opts(expire_flags)]),
            (b"ttl", 2, lambda: [k()]),
            (b"pttl", 1, lambda: [k()]),
            (b"expiretime", 1, lambda: [k()]),
            (b"persist", 1, lambda: [k()]),
            (b"getex", 2, lambda: [k(), *opts(self.ttl_option, lambda: [b"PERSIST"])]),
            (b"getdel", 1, lambda: [k()]),
            (b"setnx", 1, lambda: [k(), v()]),
            (b"setex", 2, lambda: [k(), n(), v()]),
            (b"psetex", 1, lambda: [k(), n(), v()]),
            (b"incr", 2, lambda: [k()]),
            (b"incrby", 2, lambda: [k(), n()]),
            (b"decr", 1, lambda: [k()]),
            (b"decrby", 1, lambda: [k(), n()]),
            (b"append", 2, lambda: [k(), v()]),
            (b"strlen", 1, lambda: [k()]),
            (b"type", 1, lambda: [k()]),
            (b"rename", 2, lambda: [k(), k()]),
            (b"scan", 4, scan),
            (b"keys", 3, lambda: [self.pattern()]),
            (b"dbsize", 1, list),
            (b"flushdb", 0.3, lambda: opts(lambda: [rng.choice((b"SYNC", b"ASYNC", b"x"))])),
            (b"flushall", 0.2, lambda: opts(lambda: [b"ASYNC"])),
            (b"multi", 3, list),
            (b"exec", 3, list),
            (b"discard", 1, list),
            (b"watch", 2, lambda: self.keys()),
            (b"unwatch", 1, list),
            (b"hello", 2, self._hello),
            (b"auth", 2, self._auth),
            (b"client", 3, client),
            (b"stash", 5, lambda: [self.json(), *opts(
                lambda: [rng.choice((b"EX", b"PX", b"ex")), n()], lambda: [self.junk()]
            )]),
            (b"recall", 4, lambda: [k(), *opts(lambda: [rng.choice((b"WITHMETA", b"withmeta", b"X"))])]),
            (b"update", 4, update),
            (b"forget", 2, lambda: self.keys()),
            (b"ping", 3, lambda: opts(lambda: [v()])),
            (b"echo", 2, lambda: [v()]),
            (b"select", 1, lambda: [rng.choice((b"0", b"1", n()))]),
            (b"info", 1, lambda: opts(lambda: [rng.choice((b"server", b"keyspace", b"all", b"everything", b"x"))])),
            (b"config", 1, lambda: rng.choice(([b"GET", self.pattern()], [b"SET", b"a", b"b"], [b"HELP"], [b"RESETSTAT"]))),
            (b"command", 0.5, command),
            (b"time", 0.5, list),
            (b"quit", 0.3, list),
            (b"reset", 0.7, list),
            (b"\x00unknown", 1, unknown),
            (b"\x00arity", 3, wrong_arity),
        ]  # fmt: skip

    def _credentials(self) -> tuple[Args, bool]:
        """An AUTH's [username] key, and whether it might be refused (and so count)."""
        rng = self.rng
        role_key = self.role.key
        if role_key is not None and rng.random() < 0.5:
            return (rng.choice(([role_key], [b"default", role_key])), False)
        if not self.strict and rng.random() < 0.6:
            return ([b"ns%d" % rng.randrange(8)], False)
        secret = rng.choice((b"", b"sk_live_" + rng.randbytes(8).hex().encode(), b"x" * 46))
        return (rng.choice(([secret], [b"someone", secret], [b"default", secret])), True)

    def _auth(self) -> Args:
        if self.rng.random() < 0.1:
            return self.rng.choice(([], [b"a", b"b", b"c"]))
        creds, risky = self._credentials()
        self.auth_attempts += risky
        return creds

    def _hello(self) -> Args:
        rng = self.rng
        version = rng.choice((b"2", b"3", b"3", b"1", b"4", b"abc", b"-1"))
        args: Args = [] if rng.random() < 0.1 else [version]
        if args and rng.random() < 0.5:
            creds, risky = self._credentials()
            if len(creds) == 1:
                creds = [b"default", *creds]
            self.auth_attempts += risky
            args += [b"AUTH", *creds]
        if args and rng.random() < 0.2:
            args += [b"SETNAME", rng.choice((b"fuzz", b"a b"))]
        if args and rng.random() < 0.05:
            args += [b"AUTH"]
        return args

    def _case(self, name: bytes) -> bytes:
        r = self.rng.random()
        if r < 0.6:
            return name.upper()
        if r < 0.9:
            return name
        return bytes(c ^ 32 if self.rng.random() < 0.5 and 97 <= c <= 122 else c for c in name)

    # -- frames -----------------------------------------------------------------------
    def request(self) -> Frame:
        """A valid request of a random command (replies None only when unknowable)."""
        name = self.rng.choices(self.names, self.weights)[0]
        args = self.makers[name]()
        if name.startswith(b"\x00"):  # unknown and wrong-arity requests carry their own
            if not args:
                args = [b"get"]
            name, args = args[0].lower(), args[1:]
            if name in (b"auth", b"hello"):
                self.auth_attempts += 1  # junk credentials, perhaps: count it as refused
        wire_name = self._case(name)
        full = [wire_name, *args]
        frame = Frame(b"", name=name)
        if name == b"hello" and args and args[0] in (b"2", b"3"):
            frame.hello = int(args[0])
        if name == b"quit":
            frame.closes = True
        unknowable = name in (b"auth", b"hello") and self.auth_attempts > AUTH_FAILURES_PAIRED
        if self.preauth and (len(full) > PREAUTH_ARGS or any(len(a) > PREAUTH_BULK for a in full)):
            unknowable = True  # refused at the header, and the connection closes
        if name == b"reset" and self.strict:
            self.preauth = True  # anonymous again: later reads get the pre-auth caps
        as_inline = self.rng.random() < 0.08 and sum(map(len, full)) * 4 < INLINE_SAFE
        if as_inline:
            frame.data = inline(full, self.rng.choice((b"\r\n", b"\n")))
        else:
            frame.data = encode(full)
        if unknowable:
            frame.replies = None
        return frame

    def oddity(self) -> Frame:
        """A frame no well-behaved client sends; how many replies it gets is mostly known."""
        rng = self.rng
        r = rng.random()
        if r < 0.3:  # RESP3 and reply types as the first byte: an inline command
            head = rng.choice(b"+-:_,#!=(%~>|$")
            word = bytes([head]) + rng.choice((b"1", b"PING", b"t", b"3.14", b"0", b"ERR x"))
            return Frame(word + rng.choice((b"\r\n", b"\n")), name=word.lower())
        if r < 0.45:  # empty inline lines: no reply at all
            return Frame(rng.choice((b"\r\n", b"\n", b"   \r\n", b"\t\n")), replies=0)
        if r < 0.55:  # empty multibulk requests are ignored, as in Redis
            return Frame(rng.choice((b"*0\r\n", b"*-1\r\n")), replies=0)
        if r < 0.7:  # NULs and CR/LF inside arguments, inline and as bulks
            args = [b"ECHO", rng.choice((b"\x00", b"a\r\nb", b"\r\n\r\n", b"\x00\r\n*1\r\n"))]
            data = inline(args) if rng.random() < 0.5 else encode(args)
            return Frame(data, name=b"echo")
        return self.broken()

    def broken(self) -> Frame:
        """Framing the server must refuse, or may wait on: what follows is unknowable."""
        rng = self.rng
        big = rng.choice((b"2000000000", b"1048577", b"2147483648", b"9" * 30, b"-2", b"01"))
        data = rng.choice(
            (
                b"*" + big + b"\r\n",
                b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$536870913\r\n",
                b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$" + big + b"\r\n",
                b"*1\r\n$" + b"9" * 40 + b"\r\n",
                b"*1\r\n+PING\r\n",
                b"*2\r\n$3\r\nGET\r\n:5\r\n",
                b"*1\r\n$4\r\nPINGxx\r\n",
                b"*1\r\n$-1\r\n",
                b"*1\r\n$4\r\nPI",
                b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100\r\n" + b"x" * 50,
                b'SET "unterminated\r\n',
                b"SET 'a'b\r\n",
                b"POST / HTTP/1.1\r\nHost: x\r\n\r\n",
                b"*2\r\n$4\r\nPOST\r\n$1\r\n/\r\n",
                b"*01\r\n$4\r\nPING\r\n",
                b"*+1\r\n$4\r\nPING\r\n",
                b"*1\r\n$01\r\nx\r\n",
                b"*1\r\n$ 1\r\nx\r\n",
                b"*1\n$4\nPING\n",
                b"*1\r\n*1\r\n$4\r\nPING\r\n",
                b"*1\r\n%1\r\n+a\r\n+b\r\n",
                b"*1\r\n=8\r\ntxt:PING\r\n",
                b"*1\r\n_\r\n",
                b"*2\r\n$4\r\nECHO\r\n$16385\r\n" + b"x" * 16385 + b"\r\n",
                b"*11\r\n" + b"$1\r\nx\r\n" * 11,
                b"A" * 70_000,
                b"\x00" * 100,
                b"*1048576\r\n" + b"$0\r\n\r\n" * 1000,
            )
        )
        return Frame(data, replies=None)

    def mutate(self, frame: Frame) -> Frame:
        """The frame with one to three bytes-level mutations; its replies are unknowable."""
        rng = self.rng
        data = bytearray(frame.data)
        for _ in range(rng.randint(1, 3)):
            op = rng.randrange(6)
            i = rng.randrange(len(data) + 1)
            if op == 0 and data:  # flip a bit
                i = min(i, len(data) - 1)
                data[i] ^= 1 << rng.randrange(8)
            elif op == 1 and data:  # replace a byte with one that means something
                data[min(i, len(data) - 1)] = rng.choice(SIGNIFICANT)
            elif op == 2:  # insert
                data[i:i] = bytes(rng.choice(SIGNIFICANT) for _ in range(rng.randint(1, 4)))
            elif op == 3:  # delete
                del data[i : i + rng.randint(1, 8)]
            elif op == 4 and data:  # duplicate a slice somewhere
                j = rng.randrange(len(data))
                data[i:i] = data[j : j + rng.randint(1, 32)]
            else:  # change a number
                digits = [p for p, c in enumerate(data) if 48 <= c <= 57]
                if digits:
                    p = rng.choice(digits)
                    data[p : p + 1] = rng.choice((b"0", b"9" * 12, b"-1", b"", b"4294967297"))
        return Frame(bytes(data), replies=None, name=frame.name)


def split(data: bytes, rng: random.Random) -> list[bytes]:
    """``data`` cut at random points: whole, a few pieces, many, or its start byte by byte."""
    r = rng.random()
    if r < 0.3 or len(data) < 2:
        return [data]
    if r < 0.9:
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 16))))
    else:
        head = min(len(data) - 1, rng.randint(1, 200))
        cuts = list(range(1, head + 1))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


# -- running sessions -----------------------------------------------------------------------
@dataclass
class Failure:
    """A session that showed a server bug: what it sent and what went wrong."""

    kind: str
    detail: str
    opening: bytes
    stream: bytes
    cuts: list[int] = field(default_factory=list)  # lengths of the writes it was sent in

    def render(self, limit: int = 3000) -> str:
        """The failure with the bytes to reproduce it (cut to ``limit``)."""
        stream = self.stream if len(self.stream) <= limit else self.stream[:limit] + b"..."
        return (
            f"{self.kind}: {self.detail}\n  opening: {self.opening!r}\n"
            f"  sent ({len(self.stream)} bytes): {stream!r}"
        )


class _Mismatch(Exception):
    """The replies do not match the requests (internal)."""


class Pairing:
    """Walks the frames as replies come, knowing each reply's protocol while it can."""

    def __init__(self, frames: list[Frame], proto: int) -> None:
        self.frames = frames
        self.proto: int | None = proto
        self.index = 0
        self.left = frames[0].replies if frames else 0
        self.paired = True
        self.after_close = False

    def _advance(self) -> None:
        while self.paired and self.index < len(self.frames) and self.left == 0:
            self.index += 1
            if self.index < len(self.frames):
                self.left = self.frames[self.index].replies
        if self.paired and self.index < len(self.frames) and self.left is None:
            self.paired = False

    def next_proto(self) -> int | None:
        """The protocol the next reply must be in (None: either)."""
        self._advance()
        if not self.paired or self.index >= len(self.frames):
            return None if not self.paired else self.proto
        if self.frames[self.index].hello:
            return None  # HELLO's own reply is in the version it asks for, if it works
        return self.proto

    def took(self, reply: Reply) -> None:
        """Match one reply to the request it answers."""
        self._advance()
        if not self.paired:
            return
        if self.after_close or self.index >= len(self.frames):
            raise _Mismatch(f"a reply no request asked for: {reply.render()[:200]}")
        frame = self.frames[self.index]
        text = reply.value if reply.kind in "+-" else b""
        if reply.kind == "-" and text.startswith(b"ERR Protocol error"):
            raise _Mismatch(f"a valid request {frame.data[:200]!r} got {reply.render()}")
        if frame.hello and reply.kind != "-":
            self.proto = None if text == b"QUEUED" else frame.hello
        if frame.name == b"reset" and text == b"RESET":
            self.proto = 2
        assert self.left is not None
        self.left -= 1
        if self.left == 0 and frame.closes:
            self.after_close = True

    @property
    def expected(self) -> int | None:
        """Replies the whole session gets, when every frame's count is known."""
        total = 0
        for frame in self.frames:
            if frame.replies is None:
                return None
            total += frame.replies
            if frame.closes:
                break
        return total


@dataclass
class SessionPlan:
    """One connection's worth of attack."""

    source: str
    role: Role
    frames: list[Frame]
    chunks: list[bytes]
    clean: bool  # every frame's replies known: wait for them all, then for the close


@dataclass
class Tally:
    """What a campaign sent and got, and what went wrong."""

    frames: int = 0
    sessions: int = 0
    replies: int = 0
    bytes_sent: int = 0
    resets: int = 0  # connections ended by a reset rather than a close
    failed: int = 0  # failing sessions; the first KEEP_FAILURES are kept in ``failures``
    failures: list[Failure] = field(default_factory=list)


@dataclass
class _StreamState:
    reset: bool = False  # the server ended the connection with a reset, not a close
    error: str = ""  # why the replies were invalid, if they were


async def run_session(port: int, plan: SessionPlan, tally: Tally, timeout: float) -> None:
    """Run one session; record a failure in ``tally`` if the server misbehaved."""
    stream = b"".join(plan.chunks)
    opening = encode(plan.role.opening) if plan.role.opening else b""

    def fail(kind: str, detail: str) -> None:
        tally.failed += 1
        if len(tally.failures) < KEEP_FAILURES:
            cuts = [len(c) for c in plan.chunks]
            tally.failures.append(Failure(kind, detail, opening, stream, cuts))

    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, local_addr=(plan.source, 0)), timeout
        )
    except (OSError, TimeoutError) as exc:
        fail("connect", repr(exc))
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    parser = ReplyParser()
    pairing = Pairing(plan.frames, plan.role.proto)
    counted = asyncio.Event()
    ended = asyncio.Event()
    state = _StreamState()
    opening_reply: list[Reply] = []

    async def read() -> None:
        try:
            while True:
                try:
                    data = await reader.read(65536)
                except ConnectionError:
                    state.reset = True
                    return
                if not data:
                    return
                parser.feed(data)
                while True:
                    if opening and not opening_reply:
                        reply = parser.next(None)
                        if reply is None:
                            break
                        opening_reply.append(reply)
                        counted.set()
                        continue
                    reply = parser.next(pairing.next_proto())
                    if reply is None:
                        break
                    tally.replies += 1
                    pairing.took(reply)
                    counted.set()
        except (InvalidReply, _Mismatch) as exc:
            state.error = f"{type(exc).__name__}: {exc}"
        finally:
            ended.set()

    async def until(done: Callable[[], bool], seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while not done():
            if ended.is_set():
                return done()
            counted.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            waiters = [asyncio.ensure_future(counted.wait()), asyncio.ensure_future(ended.wait())]
            _, pending = await asyncio.wait(
                waiters, timeout=left, return_when=asyncio.FIRST_COMPLETED
            )
            for w in pending:
                w.cancel()
        return True

    task = asyncio.ensure_future(read())
    try:
        if opening:
            writer.write(opening)
            if not await until(lambda: bool(opening_reply), timeout):
                fail("stall", f"no reply to the opening in {timeout} s")
                return
            first = opening_reply[0]
            if first.kind == "-" or (first.kind == "+" and first.value != b"OK"):
                fail("opening refused", first.render())
                return
        wrote = True
        try:
            for chunk in plan.chunks:
                writer.write(chunk)
                await asyncio.wait_for(writer.drain(), timeout)
                tally.bytes_sent += len(chunk)
        except (ConnectionError, OSError):
            wrote = False
        except TimeoutError:
            fail("stall", f"the server read nothing for {timeout} s")
            return
        expected = pairing.expected if plan.clean else None
        if expected is not None:
            if not wrote and not state.error:
                fail("closed", "the server closed a session of valid requests")
            elif not await until(lambda: parser.replies - len(opening_reply) >= expected, timeout):
                got = parser.replies - len(opening_reply)
                what = "closed" if ended.is_set() else "stall"
                fail(what, f"{got} of {expected} replies (timeout {timeout} s)")
                return
        if not ended.is_set() and not writer.transport.is_closing():
            with contextlib.suppress(OSError):
                writer.write_eof()
        try:
            await asyncio.wait_for(ended.wait(), timeout)
        except TimeoutError:
            fail("stall", f"the connection stayed open {timeout} s after the client's EOF")
            return
        if state.error:
            fail("invalid reply", state.error)
        elif parser.pending and not state.reset:
            fail("truncated", f"the stream ended inside a reply ({parser.pending} bytes)")
        tally.resets += state.reset
    finally:
        task.cancel()
        writer.close()
        tally.sessions += 1
        tally.frames += len(plan.frames)


# -- the campaign ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Setup:
    """A daemon configuration to attack."""

    backend: str
    strict: bool
    log_level: str = "info"

    @property
    def label(self) -> str:
        """E.g. ``memory/strict/info``."""
        return f"{self.backend}/{'strict' if self.strict else 'open'}/{self.log_level}"


@dataclass
class FuzzRun:
    """What one campaign against one daemon measured."""

    setup: Setup
    tally: Tally
    seconds: float
    latencies: Latencies
    log_problems: list[str]
    log_lines: int
    exit_code: int
    rss_start_kib: int
    rss_end_kib: int
    peak_rss_kib: int

    def summary(self) -> str:
        """One paragraph of figures."""
        t = self.tally
        return (
            f"{self.setup.label}: {t.frames} frames in {t.sessions} sessions, {t.replies} "
            f"replies, {t.bytes_sent} bytes sent, {t.resets} resets, {self.seconds:.1f} s "
            f"({t.frames / max(self.seconds, 1e-9):.0f} frames/s); control PING "
            f"{self.latencies.summary()}; RSS {self.rss_start_kib // 1024} -> "
            f"{self.rss_end_kib // 1024} MiB (peak {self.peak_rss_kib // 1024}); "
            f"{self.log_lines} log lines, {len(self.log_problems)} problems, "
            f"{t.failed} failing sessions, exit {self.exit_code}"
        )


def _source(rng: random.Random) -> str:
    """A loopback address other than 127.0.0.1 (the probe's), so failed AUTHs of one
    session never block another's address, nor the probe's."""
    return f"127.{rng.randint(1, 254)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def _role(rng: random.Random, strict: bool, keys: dict[str, str]) -> Role:
    r = rng.random()
    if not strict:
        ns = b"ns%d" % rng.randrange(8)
        if r < 0.4:
            return Role("anonymous", None, None, preauth=False)
        if r < 0.7:
            return Role("auth", [b"AUTH", ns], None, preauth=False)
        if r < 0.85:
            return Role("hello3", [b"HELLO", b"3"], None, preauth=False, proto=3)
        return Role("hello3-auth", [b"HELLO", b"3", b"AUTH", b"default", ns], None, False, 3)
    if r < 0.35:
        return Role("unauthenticated", None, None, preauth=True)
    tier = "enterprise" if r < 0.85 else "free"
    key = keys[tier].encode()
    if rng.random() < 0.7:
        return Role(tier, [b"AUTH", key], key, preauth=False)
    return Role(tier + "-hello3", [b"HELLO", b"3", b"AUTH", b"default", key], key, False, 3)


def plan_session(grammar: Grammar, rng: random.Random, role: Role) -> SessionPlan:
    """A session: clean requests, requests with oddities, or requests with mutations."""
    grammar.start(role)
    size = rng.choice((1, 2, 3, 5, 10, 20, 40, 80, 150, 250))
    kind = rng.random()
    odd, mutated = 0.45 <= kind < 0.65, kind >= 0.65
    frames: list[Frame] = []
    for _ in range(size):
        frame = grammar.oddity() if odd and rng.random() < 0.15 else grammar.request()
        if mutated and rng.random() < 0.1:
            frame = grammar.mutate(frame)
        frames.append(frame)
        if frame.closes:
            break
    if mutated and all(f.replies is not None for f in frames):
        i = rng.randrange(len(frames))
        frames[i] = grammar.mutate(frames[i])
    stream = b"".join(f.data for f in frames)
    clean = all(f.replies is not None for f in frames)
    return SessionPlan(_source(rng), role, frames, split(stream, rng), clean)


async def _attack(
    port: int,
    frames: int,
    rng: random.Random,
    strict: bool,
    keys: dict[str, str],
    concurrency: int,
    timeout: float,
    max_failures: int,
) -> Tally:
    """Sessions ``concurrency`` at a time until ``frames`` were sent; PING after each round."""
    grammar = Grammar(rng, strict=strict)
    tally = Tally()
    control = RespClient(port, timeout=timeout)
    if strict:
        assert control.call("AUTH", keys["probe"]).render() == "+OK"
    try:
        while tally.frames < frames and tally.failed < max_failures:
            plans = [
                plan_session(grammar, rng, _role(rng, strict, keys)) for _ in range(concurrency)
            ]
            await asyncio.gather(*(run_session(port, p, tally, timeout) for p in plans))
            pong = control.call("PING").render()
            if pong != "+PONG":
                tally.failed += 1
                tally.failures.append(
                    Failure("control", f"PING after a round answered {pong}", b"", b"")
                )
                break
    finally:
        control.close()
    return tally


def save_failures(directory: Path, setup: Setup, failures: list[Failure]) -> None:
    """Write each failure's bytes to ``directory`` (``STASH_FUZZ_DUMP``), to replay by hand.

    One JSON file per failure: the setup, what went wrong, and the opening and the stream
    (latin-1 text, so every byte survives) with the sizes of the writes that carried it.
    """
    directory.mkdir(parents=True, exist_ok=True)
    label = setup.label.replace("/", "-")
    for i, f in enumerate(failures):
        record = {
            "setup": setup.label,
            "kind": f.kind,
            "detail": f.detail,
            "opening": f.opening.decode("latin-1"),
            "stream": f.stream.decode("latin-1"),
            "writes": f.cuts,
        }
        (directory / f"{label}-{i}.json").write_text(json.dumps(record))


@contextlib.contextmanager
def campaign_daemon(setup: Setup) -> Iterator[tuple[WatchedDaemon, dict[str, str]]]:
    """A daemon configured as ``setup`` says, and in strict mode its keys.

    The keys are ``enterprise`` and ``free`` (users the fuzzer authenticates as) and
    ``probe`` (the control clients' own user, so no session's rate or flush touches it).
    """
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "stash.db"
        extra = ["--backend", setup.backend, "--max-payload-bytes", str(PAYLOAD)]
        extra += ["--default-ttl", str(DEFAULT_TTL), "--max-ttl", str(MAX_TTL)]
        env: dict[str, str] = {}
        keys: dict[str, str] = {}
        if setup.strict:
            registry = SQLiteRegistry(db)
            try:
                for name, user, tier in (
                    ("enterprise", "fuzz", "enterprise"),
                    ("free", "meter", "free"),
                    ("probe", "probe", "enterprise"),
                ):
                    keys[name] = issue_key(registry, user, tier).secret
            finally:
                registry.close()
            # The auth timeout is the slowloris test's business; here it must not end
            # sessions of a loaded machine halfway.
            extra += ["--auth", "keys", "--db", str(db), "--auth-timeout", "120"]
            for tier in ("FREE", "ENTERPRISE"):
                env[f"STASH_TIER_{tier}_DEFAULT_TTL"] = str(DEFAULT_TTL)
                env[f"STASH_TIER_{tier}_MAX_TTL"] = str(MAX_TTL)
                env[f"STASH_TIER_{tier}_MAX_PAYLOAD_BYTES"] = str(PAYLOAD)
        with WatchedDaemon(*extra, env=env, log_level=setup.log_level, db=db) as daemon:
            yield daemon, keys


def fuzz(
    setup: Setup,
    frames: int,
    seed: int,
    *,
    concurrency: int = 4,
    timeout: float = 10.0,
    max_failures: int = MAX_FAILURES,
) -> FuzzRun:
    """Start a daemon as ``setup`` says, attack it with ``frames`` frames, stop it.

    ``timeout`` bounds every wait of a session (a reply, a drain, the close after EOF):
    past it the session is a stall. The campaign stops early after ``max_failures``
    failing sessions.
    """
    rng = random.Random(seed)
    with campaign_daemon(setup) as (daemon, keys):
        with Probe("resp", daemon.port, key=keys.get("probe")) as probe:
            rss_start = daemon.rss_kib()
            started = time.monotonic()
            tally = asyncio.run(
                _attack(
                    daemon.port, frames, rng, setup.strict, keys, concurrency, timeout, max_failures
                )
            )
            seconds = time.monotonic() - started
            latencies = probe.finish()
        rss_end, peak = daemon.rss_kib(), daemon.peak_rss_kib()
        code = daemon.stop()
    dump = os.environ.get("STASH_FUZZ_DUMP")
    if dump:
        save_failures(Path(dump), setup, tally.failures)
    return FuzzRun(
        setup, tally, seconds, latencies, daemon.problems, daemon.lines, code,
        rss_start, rss_end, peak,
    )  # fmt: skip
