"""Open-ended input: the framing guard agrees with itself, and random streams never hurt the server."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stashd.errors import StashError
from stashd.resp import RequestReader
from tests.support.resp_client import RespClient
from tests.support.servers import StashDaemon

args = st.lists(st.binary(max_size=40), min_size=1, max_size=6)


def encode_request(request: list[bytes]) -> bytes:
    """An array of bulk strings, as clients send it."""
    return b"*%d\r\n" % len(request) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in request)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """Cut ``data`` at the given offsets."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


@given(requests=st.lists(args, min_size=1, max_size=20), cuts=st.lists(st.integers(0, 10**6)))
@settings(max_examples=300)
def test_reader_yields_exactly_the_requests_sent(
    requests: list[list[bytes]], cuts: list[int]
) -> None:
    """However a valid stream is split into reads, the reader returns the requests sent."""
    data = b"".join(encode_request(r) for r in requests)
    reader = RequestReader()
    got: list[list[bytes] | StashError] = []
    for chunk in split(data, cuts):
        got.extend(reader.feed(chunk))
    assert got == requests


@pytest.fixture(scope="module")
def fuzz_daemon() -> Iterator[StashDaemon]:
    """One daemon that every fuzz example attacks."""
    with StashDaemon("--max-payload-bytes", "4096") as d:
        yield d


fragments = st.one_of(
    args.map(encode_request),
    st.sampled_from(
        [
            b"*2000000000\r\n",
            b"$999999999999\r\n",
            b"*1\r\n+PING\r\n",
            b"PING\r\n",
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$9000\r\n",
            b"*2\r\n$3\r\nGET\r\n:5\r\n",
            b'SET "unterminated\r\n',
            b"*-1\r\n",
            b"\r\n",
            b"POST / HTTP/1.1\r\n",
        ]
    ),
    st.binary(max_size=64),
)


@given(stream=st.lists(fragments, max_size=12), cuts=st.lists(st.integers(0, 10**6), max_size=8))
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_random_streams_never_take_the_server_down(
    fuzz_daemon: StashDaemon, stream: list[bytes], cuts: list[int]
) -> None:
    """The server answers or closes on any byte stream, and a control client keeps working."""
    control = RespClient(fuzz_daemon.port)
    data = b"".join(stream)
    with socket.create_connection(("127.0.0.1", fuzz_daemon.port), timeout=2) as sock:
        try:
            for chunk in split(data, cuts):
                sock.sendall(chunk)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass
        except OSError:
            # Reset, broken pipe, timeout, or ENOTCONN from shutdown() when the server
            # already closed this connection: all fine, the control client decides.
            pass
    assert control.call("PING").render() == "+PONG"
    assert fuzz_daemon.proc is not None
    assert fuzz_daemon.proc.poll() is None
    control.close()
