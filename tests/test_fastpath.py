"""The C hot path (stashd._fastpath) answers and stores exactly as the Python paths do.

Streams of GET/SET mixed with everything the C code must refuse to handle (other
commands, other forms, malformed or unfinished framing, oversized values, expired keys,
new namespaces, protocol switches) are cut into reads at random points and fed to three
connections: general dispatch, the Python direct path and the C path. Replies and stored
state must be the same byte for byte.
"""

from __future__ import annotations

from typing import Any

import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from stashd import _fastpath
from stashd.store.base import Entry
from stashd.store.memory import MemoryStore
from tests.test_direct import Clock, connection, encode, state

keys = st.sampled_from([b"a", b"b", b"k" * 9])  # the last is over the 8-byte payload cap
values = st.binary(max_size=10)
names = st.sampled_from([b"GET", b"get", b"GeT", b"SET", b"set", b"sEt", b"GEX", b"SETX"])
plain = st.one_of(
    st.tuples(st.sampled_from([b"GET", b"get"]), st.sampled_from([b"a", b"b"])).map(list),
    st.tuples(st.sampled_from([b"SET", b"Set"]), st.sampled_from([b"a", b"b"]), values).map(list),
)
requests = st.one_of(
    plain,
    plain,
    plain,
    st.tuples(names, keys).map(list),
    st.tuples(names, keys, values).map(list),
    st.tuples(st.just(b"SET"), keys, values, st.sampled_from([b"NX", b"EX"])).map(list),
    st.tuples(st.just(b"DEL"), keys).map(list),
    st.tuples(st.just(b"HELLO"), st.sampled_from([b"2", b"3"])).map(list),
    st.tuples(st.just(b"AUTH"), st.sampled_from([b"alice", b"bob"])).map(list),
    st.just([b"GET"]),
)
# Framing the C code must leave to the guard: leading zeros, a sign, a wrong terminator
# after a bulk, a non-bulk item, an inline command, a header without its CRLF.
odd_framing = st.sampled_from(
    [
        b"*02\r\n$3\r\nGET\r\n$1\r\na\r\n",
        b"*2\r\n$03\r\nGET\r\n$1\r\na\r\n",
        b"*2\r\n$3\r\nGET\r\n$+1\r\na\r\n",
        b"*2\r\n$3\r\nGET\r\n$1\r\naXY",
        b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\nbxx",
        b"*2\r\n$3\r\nGET\r\n:1\r\n",
        b"GET a\r\n",
        b"SET a 1\r\n",
        b"*2\n$3\r\nGET\r\n$1\r\na\r\n",
        b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$99999999999\r\n",
    ]
)
chunks = st.one_of(requests.map(encode), odd_framing)


def run_all(reads: list[bytes], ticks: list[int]) -> list[tuple[bytes, dict[Any, Any]]]:
    """Feed the same reads to each path; (replies, live state) of each."""
    results = []
    for direct, fast in ((False, False), (True, False), (True, True)):
        clock = Clock()
        conn, out, store = connection(clock, direct=direct, fast=fast)
        assert conn.session is not None
        conn.session.client_id = 1  # HELLO and CLIENT INFO show it
        with structlog.testing.capture_logs():
            # The keyspace exists from here on, so the C path runs from the first read.
            conn.data_received(encode([b"SET", b"seed", b"1"]))
            for data, tick in zip(reads, ticks, strict=True):
                conn.data_received(data)
                clock.now += tick
        live = {k: v for k, v in state(store).items() if v[1] > clock.now}
        results.append((bytes(out.out), live))
    return results


mostly_plain = st.one_of(plain.map(encode), plain.map(encode), plain.map(encode), odd_framing)


@given(
    stream=st.one_of(
        st.lists(chunks, min_size=1, max_size=12),
        st.lists(mostly_plain, min_size=1, max_size=20),
    ),
    cuts=st.lists(st.integers(0, 400), max_size=6),
    ticks=st.lists(st.sampled_from([0, 1, 5000, 20_000]), min_size=7, max_size=7),
)
@settings(max_examples=400, deadline=None)
def test_paths_agree_on_any_stream(stream: list[bytes], cuts: list[int], ticks: list[int]) -> None:
    """Same replies and the same values, expiries and versions, however reads are cut."""
    data = b"".join(stream)
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    reads = [data[a:b] for a, b in zip(points, points[1:], strict=False)] or [data]
    general, direct, fast = run_all(reads, ticks[: len(reads)])
    assert direct == general
    assert fast == general


def test_fast_path_runs_and_stops_where_it_must() -> None:
    """The check above compares paths, so prove the C one really answers, and stops."""
    clock = Clock()
    store = MemoryStore(clock)
    out = bytearray()
    setter = encode([b"SET", b"k", b"v1"])
    # A namespace's first write is left to Python, which creates its keyspace.
    assert _fastpath.run(setter, store, "ns", Entry, 0, 10, 99, 99, 999, 2, out) == 0
    store.view.put_value("ns", b"k", b"v0", 10, 0)
    data = setter + encode([b"get", b"k"]) + encode([b"GET", b"nope"]) + encode([b"DEL", b"k"])
    done, last = divmod(_fastpath.run(data, store, "ns", Entry, 0, 10, 99, 99, 999, 3, out), 4)
    assert data[done:] == encode([b"DEL", b"k"])
    assert last == 1  # a GET ran last
    assert bytes(out) == b"+OK\r\n$2\r\nv1\r\n_\r\n"
    entry = store.spaces["ns"].data[b"k"]
    assert (entry.value, entry.expires_at, entry.version) == (b"v1", 10, 2)
    # An expired key is Python's to free; a value over the payload cap is Python's to refuse.
    assert (
        _fastpath.run(encode([b"GET", b"k"]), store, "ns", Entry, 10, 10, 99, 99, 999, 2, out) == 0
    )
    big = encode([b"SET", b"k", b"x" * 100])
    assert _fastpath.run(big, store, "ns", Entry, 0, 10, 999, 99, 9999, 2, out) == 0


def test_new_keys_get_their_scan_place() -> None:
    """A key the C path creates is listed by SCAN like any other, in insertion order."""
    clock = Clock()
    conn, out, _ = connection(clock, direct=True, fast=True)
    conn.data_received(encode([b"SET", b"first", b"1"]))  # Python creates the keyspace
    conn.data_received(b"".join(encode([b"SET", b"k%d" % i, b"v"]) for i in range(5)))
    conn.data_received(encode([b"SCAN", b"0", b"COUNT", b"100"]))
    assert bytes(out.out).endswith(
        b"*2\r\n$1\r\n0\r\n*6\r\n$5\r\nfirst\r\n" + b"".join(b"$2\r\nk%d\r\n" % i for i in range(5))
    )


def test_a_bulk_over_the_payload_limit_is_too_large_whatever_comes_before_it() -> None:
    """TOOLARGE for any bulk over the limit, on its own in a read or after another request.

    The reader's fast path does not see bulk lengths; a read whose bulk headers are as
    long as the limit's goes to the strict scan, which does (found by the test above: a
    GET with an extra oversized argument got the arity error alone, TOOLARGE otherwise).
    """
    oversized = b"*3\r\n$3\r\nGET\r\n$1\r\na\r\n$9\r\n" + b"\x00" * 9 + b"\r\n"
    for reads in ([oversized], [encode([b"SET", b"a", b"("]) + oversized]):
        for replies, _ in run_all(reads, [0]):
            assert replies.endswith(b"-TOOLARGE value is 9 bytes, the limit is 8 bytes\r\n")
