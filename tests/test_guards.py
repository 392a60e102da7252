"""The guards of a server facing a network: query buffer cap, pre-auth caps, max clients,
and open mode's rate limit; the framing rules first, then a real daemon for each guard.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stashd.errors import ProtocolError, QueryBufferFull, TooLarge
from stashd.resp import MAX_ARGS, MAX_BULK, PREAUTH_MAX_ARGS, PREAUTH_MAX_BULK, RequestReader


def _request(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)


def _reader(max_payload: int, max_request: int) -> RequestReader:
    reader = RequestReader()
    reader.set_limits(
        max_args=MAX_ARGS, max_bulk=MAX_BULK, max_payload=max_payload, max_request=max_request
    )
    return reader


@given(
    requests=st.lists(
        st.lists(st.binary(max_size=300), min_size=1, max_size=4), min_size=1, max_size=5
    ),
    cuts=st.lists(st.integers(1, 97), max_size=40),
)
@settings(max_examples=200)
def test_a_request_within_the_cap_passes_however_it_is_split(
    requests: list[list[bytes]], cuts: list[int]
) -> None:
    """Each bulk counts once against the query buffer, however many reads it arrives in."""
    stream = b"".join(_request(*r) for r in requests)
    biggest = max(len(_request(*r)) for r in requests)
    reader = _reader(max_payload=1000, max_request=biggest)
    got: list[object] = []
    pos = 0
    for cut in cuts:
        got += reader.feed(stream[pos : pos + cut])
        pos += cut
    got += reader.feed(stream[pos:])
    assert got == [list(r) for r in requests]


def test_a_big_value_arriving_in_many_reads_is_not_counted_again_per_read() -> None:
    """A 300 MiB value under a 1 GiB cap is accepted even when it trickles in (it used not to be)."""
    reader = _reader(max_payload=MAX_BULK, max_request=1024 * 1024 * 1024)
    size = 300 * 1024 * 1024
    assert reader.feed(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n" % size) == []
    chunk = b"v" * (1024 * 1024)
    for _ in range(size // len(chunk)):
        assert reader.feed(chunk) == []
    (request,) = reader.feed(b"\r\n")
    assert isinstance(request, list)
    assert [len(a) for a in request] == [3, 1, size]


def test_the_query_buffer_cap_is_enforced_at_the_header_and_skipped_bulks_are_free() -> None:
    """Kept bulks count, the header that passes the cap is refused, oversized bulks cost nothing."""
    reader = _reader(max_payload=100, max_request=200)
    oversized = _request(b"SET", b"k", b"x" * 5000)
    # Refused as soon as the header is in, before the value arrives; then skipped.
    (refused,) = reader.feed(oversized[:30])
    assert isinstance(refused, TooLarge)
    assert reader.feed(oversized[30:]) == []
    out = reader.feed(b"*5\r\n$4\r\nMSET\r\n$1\r\na\r\n$100\r\n" + b"x" * 100 + b"\r\n")
    assert out == []
    out = reader.feed(b"$1\r\nb\r\n$100\r\n")
    assert len(out) == 1
    assert isinstance(out[0], QueryBufferFull)
    assert (out[0].limit, out[0].needed) == (200, 244)  # 14 + 7 + 108 + 7 + 108
    assert out[0].wire == (
        "ERR Protocol error: request needs at least 244 bytes of query buffer, "
        "the limit is 200 bytes"
    )


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"*11\r\n", "unauthenticated multibulk length"),
        (b"*99999999999\r\n", "invalid multibulk length"),
        (b"*x\r\n", "invalid multibulk length"),
        (b"*1\r\n$16385\r\n", "unauthenticated bulk length"),
        (b"*1\r\n$999999999999\r\n", "invalid bulk length"),
        (b"*1\r\n$-3\r\n", "invalid bulk length"),
    ],
)
def test_pre_auth_caps_use_redis_words(data: bytes, text: str) -> None:
    """Before AUTH: 10 arguments of 16 KiB, refused in Redis's words (nonsense stays 'invalid')."""
    reader = RequestReader()
    reader.set_limits(
        max_args=PREAUTH_MAX_ARGS,
        max_bulk=PREAUTH_MAX_BULK,
        max_payload=PREAUTH_MAX_BULK,
        authenticated=False,
    )
    (error,) = reader.feed(data)
    assert isinstance(error, ProtocolError)
    assert error.message == f"Protocol error: {text}"
