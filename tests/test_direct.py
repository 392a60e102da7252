"""The direct path (GET/SET on the memory store) answers and stores exactly as the general one."""

from __future__ import annotations

from typing import Any

import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from stashd.errors import ProtocolError
from stashd.resp import RequestReader
from stashd.server import Connection, ServerContext
from stashd.service import MemoryService
from stashd.store.memory import MemoryStore
from stashd.tenancy import Limits, OpenKeyring


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000_000

    def __call__(self) -> int:
        return self.now


class Transport:
    """Collects what the connection writes."""

    def __init__(self) -> None:
        self.out = bytearray()

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 5000)

    def write(self, data: bytes) -> None:
        self.out += data

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


def connection(
    clock: Clock, *, direct: bool, fast: bool = False
) -> tuple[Connection, Transport, MemoryStore]:
    store = MemoryStore(clock)
    limits = Limits(max_payload=8, default_ttl_ms=10_000, max_ttl_ms=100_000)
    ctx = ServerContext(MemoryService(store), OpenKeyring(limits), store)
    # Per-write log events need the operation object, so they switch the direct path off.
    ctx.log_writes = not direct
    ctx.fastpath = fast
    conn = Connection(ctx)
    transport = Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport, store


def encode(request: list[bytes]) -> bytes:
    return b"*%d\r\n" % len(request) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in request)


keys = st.sampled_from([b"a", b"b", b"c"])
values = st.binary(max_size=12)  # some over the 8-byte limit
commands = st.one_of(
    st.tuples(st.sampled_from([b"GET", b"get"]), keys).map(list),
    st.tuples(st.sampled_from([b"SET", b"set"]), keys, values).map(list),
    st.tuples(st.just(b"SET"), keys, values, st.sampled_from([b"NX", b"XX", b"GET"])).map(list),
    st.tuples(st.just(b"SET"), keys, values, st.just(b"PX"), st.sampled_from([b"1", b"5000"])).map(
        list
    ),
    st.tuples(st.just(b"GET"), keys, keys).map(list),  # wrong arity
    st.tuples(st.just(b"DEL"), keys).map(list),
    st.tuples(st.just(b"OBJECT"), keys).map(list),  # unknown: the general path's error
    st.tuples(st.sampled_from([b"HELLO", b"hello"]), st.sampled_from([b"2", b"3"])).map(list),
)


def state(store: MemoryStore) -> dict[tuple[str, bytes], tuple[bytes, int, int]]:
    return {
        (ns, k): (e.value, e.expires_at, e.version)
        for ns, space in store.spaces.items()
        for k, e in space.data.items()
    }


@given(
    reads=st.lists(
        st.tuples(st.lists(commands, min_size=1, max_size=6), st.integers(0, 3000)), max_size=8
    )
)
@settings(max_examples=150)
def test_direct_and_general_paths_agree(reads: list[tuple[list[list[bytes]], int]]) -> None:
    """Same replies, byte for byte, and the same values, expiries and versions afterwards."""
    clock = Clock()
    fast, fast_out, fast_store = connection(clock, direct=True)
    slow, slow_out, slow_store = connection(clock, direct=False)
    assert fast.session is not None
    assert slow.session is not None
    slow.session.client_id = fast.session.client_id  # HELLO replies with it
    with structlog.testing.capture_logs():
        for batch, elapsed in reads:
            data = b"".join(encode(r) for r in batch)
            fast.data_received(data)
            slow.data_received(data)
            clock.now += elapsed
    assert bytes(fast_out.out) == bytes(slow_out.out)
    now = clock.now
    live = {k: v for k, v in state(fast_store).items() if v[1] > now}
    assert live == {k: v for k, v in state(slow_store).items() if v[1] > now}


def test_direct_path_is_taken() -> None:
    """The check above compares two paths, so prove the fast one really runs."""
    clock = Clock()
    fast, _, _ = connection(clock, direct=True)
    slow, _, _ = connection(clock, direct=False)
    assert fast._view is not None
    assert slow._view is None


resp_values = st.recursive(
    st.one_of(
        st.binary(max_size=6).map(lambda b: b"$%d\r\n%b\r\n" % (len(b), b)),
        st.integers(-5, 5).map(lambda n: b":%d\r\n" % n),
        st.sampled_from([b"$-1\r\n", b"_\r\n", b"#t\r\n", b",1.5\r\n", b"+OK\r\n", b"-ERR x\r\n"]),
    ),
    lambda inner: st.lists(inner, max_size=3).map(
        lambda items: b"*%d\r\n" % len(items) + b"".join(items)
    ),
    max_leaves=8,
)


@given(stream=st.lists(resp_values, min_size=1, max_size=5))
@settings(max_examples=300)
def test_reader_passes_on_only_flat_arrays_of_bulk_strings(stream: list[bytes]) -> None:
    """Whatever RESP a peer sends, a request reaching dispatch is a list of bytes, or refused."""
    reader = RequestReader()
    for item in reader.feed(b"".join(stream)):
        if isinstance(item, ProtocolError):
            break
        assert type(item) is list
        assert item
        assert all(type(arg) is bytes for arg in item)
