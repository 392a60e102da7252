"""Glob patterns match exactly what a real redis-server's KEYS matches, and never freeze."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from stashd.glob import MAX_NESTING, compile_glob, escape_glob
from tests.support.resp_client import Reply, RespClient
from tests.support.servers import RedisServer, StashDaemon

# Bytes that mean something to a pattern, or sort around those that do as signed C chars.
_PATTERN_BYTES = [b"a", b"b", b"*", b"?", b"[", b"]", b"^", b"-", b"\\", b"\x80", b"\xff"]
_KEY_BYTES = [*_PATTERN_BYTES, b"`", b"\x00"]
# Every key of up to three of those bytes: enough for any class or range to show itself.
_CORPUS = frozenset(
    b"".join(chars) for n in range(4) for chars in itertools.product(_KEY_BYTES, repeat=n)
)
# A db of its own, so the quirk cases' keys never mix with the corpus in db 0.
_CASE_DB = 1
_PATHOLOGICAL = b"a*" * 24 + b"b"
_FORTY_AS = b"a" * 40
_WAIT = 2.0
# A bound that only a matcher worse than linear breaks: the backtracking one took hours on
# these patterns; a linear one takes well under a second, and many times that on a busy
# machine, which a tighter bound would fail on.
_LINEAR_WAIT = 30.0


@pytest.fixture(scope="module")
def corpus(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client of the shared redis-server, flushed, with db 0 holding exactly ``_CORPUS``."""
    redis_server.flush()
    client = redis.Redis(port=redis_server.port, protocol=2, socket_timeout=10)
    client.mset(dict.fromkeys(_CORPUS, b"1"))
    yield client
    client.close()


def _ours(pattern: bytes, keys: frozenset[bytes] | set[bytes]) -> set[bytes]:
    match = compile_glob(pattern).match
    return {key for key in keys if match(key)}


@given(
    pattern=st.lists(st.sampled_from(_PATTERN_BYTES), max_size=10)
    .map(b"".join)
    .filter(lambda p: p != b"*"),  # KEYS * is "every key" without matching: callers' rule
    extra=st.lists(st.lists(st.sampled_from(_KEY_BYTES), max_size=8).map(b"".join), max_size=4),
)
@settings(max_examples=600, deadline=None)
def test_keys_match_what_redis_matches(
    corpus: redis.Redis, pattern: bytes, extra: list[bytes]
) -> None:
    """Random patterns over the glob bytes pick the same keys from the corpus as Redis's KEYS."""
    # Keys shaped like the pattern, so that patterns with many tokens match something too.
    extra += [pattern, pattern.replace(b"*", b""), pattern.replace(b"*", b"ab")]
    added = set(extra) - _CORPUS
    if added:
        corpus.mset(dict.fromkeys(added, b"1"))
    try:
        assert _ours(pattern, _CORPUS | added) == set(corpus.keys(pattern)), pattern
    finally:
        if added:
            corpus.delete(*added)


_QUIRKS = [
    # A run of stars is one star; a trailing star needs nothing, but the key must not be empty.
    (b"a**b", b"axyb", True),
    (b"a***", b"a", True),
    (b"**", b"", False),
    (b"?", b"\x00", True),
    (b"??", b"a", False),
    # The empty key matches only the empty pattern.
    (b"", b"", True),
    (b"", b"a", False),
    # An unclosed class is the rest of the pattern; it never matches "[" literally.
    (b"[abc", b"b", True),
    (b"[abc", b"[abc", False),
    (b"[", b"[", False),
    (b"[^", b"x", True),
    (b"[^", b"", False),
    (b"x[a*", b"x*", True),
    # "[]" is an empty class, "[^]" any byte; "]" right after "[" closes it.
    (b"[]", b"]", False),
    (b"[^]", b"]", True),
    (b"[]a]", b"a]", False),
    # Escapes inside a class; a lone backslash at its end is literal.
    (b"[\\]]", b"]", True),
    (b"[\\^]", b"^", True),
    (b"[\\", b"\\", True),
    # "x-y" is a range whenever three bytes are left: "[a-]" is "]".."a", unclosed.
    (b"[a-]", b"^", True),
    (b"[a-]", b"]", True),
    (b"[a-]", b"-", False),
    (b"[a-]", b"b", False),
    (b"[a-\\]", b"^", True),
    (b"[a-\\]", b"\\", True),
    # Reversed ranges are swapped.
    (b"[z-a]", b"m", True),
    # Range bounds are signed chars: 0x80..0xff are -128..-1, below 0x00.
    (b"[a-\xff]", b"\xff", True),
    (b"[a-\xff]", b"\x00", True),
    (b"[a-\xff]", b"a", True),
    (b"[a-\xff]", b"b", False),
    (b"[a-\xff]", b"\x80", False),
    (b"[\x80-\x01]", b"\xc0", True),
    (b"[\x80-\x01]", b"\x01", True),
    (b"[\x80-\x01]", b"\x02", False),
    # A backslash outside a class escapes the next byte; a trailing one is literal.
    (b"\\*", b"*", True),
    (b"\\*", b"a", False),
    (b"\\?x", b"?x", True),
    (b"a\\", b"a\\", True),
    # The pattern that used to freeze: many stars, no match.
    (_PATHOLOGICAL, _FORTY_AS, False),
    (_PATHOLOGICAL, _FORTY_AS + b"b", True),
    # Redis stops at 1000 nested stars followed by more pattern; a trailing star is free.
    (b"a*" * MAX_NESTING + b"a", b"a" * 1002, True),
    (b"a*" * (MAX_NESTING + 1) + b"a", b"a" * 1002, False),
    (b"a*" * (MAX_NESTING + 1), b"a" * 1002, True),
    (b"*?" * (MAX_NESTING + 1), b"a" * 1002, False),
]


def _case_id(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 24 else f"{text[:16]}...({len(text)})"


@pytest.mark.parametrize(("pattern", "key", "expected"), _QUIRKS, ids=_case_id)
def test_quirk_matches_as_in_redis(
    redis_server: RedisServer, pattern: bytes, key: bytes, expected: bool
) -> None:
    """Each of stringmatchlen's quirks, checked against our matcher and a real redis-server."""
    assert bool(compile_glob(pattern).match(key)) is expected
    with redis.Redis(port=redis_server.port, db=_CASE_DB, protocol=2, socket_timeout=10) as r:
        r.flushdb()
        r.set(key, b"1")
        assert (key in r.keys(pattern)) is expected


@pytest.mark.slow
def test_long_patterns_compile_and_match_in_time(redis_server: RedisServer) -> None:
    """64 KiB patterns (long segments, a thousand stars) agree with Redis within seconds."""
    size = 64 * 1024
    keys = {b"a" * size, b"a" * (size - 1) + b"b", b"a" * (size // 5)}
    expected = {
        # Redis itself takes seconds on this one (it tries the segment at every offset).
        b"*" + b"a" * (size - 2) + b"b": {b"a" * (size - 1) + b"b"},
    }
    with redis.Redis(port=redis_server.port, db=_CASE_DB, protocol=2, socket_timeout=30) as r:
        r.flushdb()
        r.mset(dict.fromkeys(keys, b"1"))
        for pattern in [b"a" * size, b"*" + b"?" * (size - 1), b"[a-z]" * (size // 5)]:
            expected[pattern] = set(r.keys(pattern))
        expected[(b"a" * 63 + b"*") * MAX_NESTING] = set(r.keys((b"a" * 63 + b"*") * MAX_NESTING))
    for pattern, matched in expected.items():
        compile_glob.cache_clear()
        start = time.monotonic()
        assert _ours(pattern, keys) == matched, pattern[:20]
        assert time.monotonic() - start < _LINEAR_WAIT, pattern[:20]


def test_escape_glob_matches_only_the_text() -> None:
    """An escaped text matches itself and nothing else of the corpus."""
    for text in [b"a*b", b"[x]", b"\\", b"?", b"a\\*", b"^-]"]:
        assert _ours(escape_glob(text), _CORPUS | {text}) == {text}


def _array(reply: Reply) -> list[bytes]:
    assert reply.kind == "*", reply.render()
    return [item.value for item in reply.value]


def test_pathological_pattern_answers_at_once_and_others_keep_being_served() -> None:
    """KEYS and SCAN MATCH with 24 stars over a key of 40 "a"s answer within a deadline."""
    with StashDaemon("--backend", "memory") as daemon:
        busy = RespClient(daemon.port, timeout=_WAIT)
        other = RespClient(daemon.port, timeout=_WAIT)
        try:
            assert busy.call("SET", _FORTY_AS, "1").render() == "+OK"
            start = time.monotonic()
            busy.send("KEYS", _PATHOLOGICAL)
            busy.send("SCAN", "0", "MATCH", _PATHOLOGICAL, "COUNT", "1000")
            busy.send("KEYS", _PATHOLOGICAL[:-1] + b"a")
            assert other.call("PING").render() == "+PONG"
            assert _array(busy.read()) == []
            cursor, page = busy.read().value
            assert (cursor.value, _array(page)) == (b"0", [])
            assert _array(busy.read()) == [_FORTY_AS]
            assert time.monotonic() - start < _WAIT
        finally:
            busy.close()
            other.close()
