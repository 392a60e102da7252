"""MULTI/EXEC is all or nothing on every backend, and JSON past the depth limit is refused.

A MERGE patch nested near the old parser's recursion limit used to pass the parse and
then overflow Python's recursion inside EXEC: half the transaction applied, no reply,
the connection gone. Now every door refuses a text nested past MAX_DEPTH when the
request is parsed, merging never recurses, and a transaction whose operation fails with
a bug (injected here in process, since no public request reaches one any more) leaves
nothing behind on any store and answers EXEC with an error.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from stashd.errors import StashError, TransactionAborted
from stashd.jsontext import MAX_DEPTH, nesting
from stashd.ops import Flush, Get, Op, Set, Transaction
from stashd.types import Entry, View
from tests.support.backends import Backend, open_backend
from tests.support.clock import Clock
from tests.support.http import START_MS
from tests.support.resp_client import CLOSED, Reply, RespClient
from tests.support.servers import RedisServer, StashDaemon

pytestmark = pytest.mark.slow

HOUR_MS = 3_600_000


@pytest.fixture(scope="module", params=["memory", "sqlite", "redis"])
def daemon(request: pytest.FixtureRequest) -> Iterator[StashDaemon]:
    """A daemon on each backend, with its HTTP sidecar; tests use keys of their own."""
    extra: tuple[str, ...] = ()
    if request.param == "redis":
        extra = ("--redis-url", request.getfixturevalue("redis_store").url)
    with StashDaemon("--backend", request.param, *extra) as d:
        yield d


def deep_patch(depth: int) -> bytes:
    """A merge patch of nested objects, ``depth`` levels deep: {"x":{"x":...1...}}."""
    return b'{"x":' * depth + b"1" + b"}" * depth


def request(*args: bytes | str) -> bytes:
    """One RESP request, as bytes to pipeline with others."""
    parts = [a if isinstance(a, bytes) else a.encode() for a in args]
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%b\r\n" % (len(p), p) for p in parts)


def pipelined(c: RespClient, *requests: tuple[bytes | str, ...]) -> list[Reply]:
    """Send every request in one write (so the server reads them together); every reply."""
    c.send_raw(b"".join(request(*r) for r in requests))
    return [c.read() for _ in requests]


def nested_past(depth: int, what: str) -> str:
    return f"{what} is not valid JSON: nested {depth} levels deep, the limit is {MAX_DEPTH} levels"


def http(
    daemon: StashDaemon, method: str, path: str, body: object = None
) -> tuple[int, dict[str, Any]]:
    """A request to the daemon's HTTP sidecar: the status and the JSON body."""
    data = None if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    url = f"http://127.0.0.1:{daemon.http_port}{path}"
    req = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - a test URL
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def nested_body(field: str, depth: int) -> bytes:
    """A JSON body whose ``field`` is nested ``depth`` levels deep (the body one more)."""
    return b'{"%s":' % field.encode() + b"[" * depth + b"]" * depth + b"}"


# -- the attack: a deep MERGE inside MULTI ----------------------------------------------------
def _merge_in_multi(c: RespClient, depth: int) -> tuple[str, bytes, list[Reply]]:
    """Pipeline a SET, then MULTI with SETs around a MERGE of ``depth`` levels, EXEC, PING."""
    tag = uuid.uuid4().hex
    doc = c.call("STASH", '{"a":1}').value
    assert isinstance(doc, bytes)
    replies = pipelined(
        c,
        ("SET", f"{tag}:pre", "1"),
        ("MULTI",),
        ("SET", f"{tag}:before", "1"),
        ("UPDATE", doc, "MERGE", deep_patch(depth)),
        ("SET", f"{tag}:after", "1"),
        ("EXEC",),
        ("PING",),
    )
    return tag, doc, replies


@pytest.mark.parametrize("depth", [MAX_DEPTH - 1, MAX_DEPTH])
def test_deep_merge_within_the_limit_runs_in_exec_with_every_reply(
    daemon: StashDaemon, depth: int
) -> None:
    """A patch at the limit merges inside EXEC; every reply of the read arrives, in order."""
    c = RespClient(daemon.port)
    tag, doc, replies = _merge_in_multi(c, depth)
    assert [r.render() for r in replies[:5]] == ["+OK", "+OK", "+QUEUED", "+QUEUED", "+QUEUED"]
    assert replies[5].render() == "[+OK, :3600, +OK]"
    assert replies[6].render() == "+PONG"
    assert c.call("MGET", f"{tag}:pre", f"{tag}:before", f"{tag}:after").render() == (
        "[$'1', $'1', $'1']"
    )
    merged = c.call("RECALL", doc).value
    assert nesting(merged) == depth
    assert merged.startswith(b'{"a":1,"x":{"x":')


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5000])
def test_deep_merge_past_the_limit_is_refused_in_its_slot_and_the_rest_runs(
    daemon: StashDaemon, depth: int
) -> None:
    """Past the limit: -NOTJSON in the patch's place, as Redis answers a command refused
    at EXEC; the others run, EXEC replies, and the connection lives.
    """
    c = RespClient(daemon.port)
    tag, doc, replies = _merge_in_multi(c, depth)
    assert [r.render() for r in replies[:5]] == ["+OK", "+OK", "+QUEUED", "+QUEUED", "+QUEUED"]
    assert replies[5].render() == f"[+OK, -NOTJSON {nested_past(depth, 'merge patch')}, +OK]"
    assert replies[6].render() == "+PONG"
    assert c.call("MGET", f"{tag}:pre", f"{tag}:before", f"{tag}:after").render() == (
        "[$'1', $'1', $'1']"
    )
    assert c.call("RECALL", doc).value == b'{"a":1}'
    assert c.call("RECALL", doc, "WITHMETA").value[-1].value == 1  # the version: unchanged


def test_the_attack_s_depths_are_refused_and_the_connection_lives(daemon: StashDaemon) -> None:
    """Near the parser's old recursion limit (about 976 levels, by the daemon's stack) a
    patch used to parse and then overflow the merge: half a transaction, no reply, the
    connection dropped. Every depth of that band is refused now, on one connection.
    """
    c = RespClient(daemon.port)
    tag = uuid.uuid4().hex
    doc = c.call("STASH", '{"a":1}').value
    for depth in range(940, 1001):
        replies = pipelined(
            c,
            ("MULTI",),
            ("SET", f"{tag}:before", str(depth)),
            ("UPDATE", doc, "MERGE", deep_patch(depth)),
            ("SET", f"{tag}:after", str(depth)),
            ("EXEC",),
        )
        assert replies[4].render() == (
            f"[+OK, -NOTJSON {nested_past(depth, 'merge patch')}, +OK]"
        ), depth
    assert c.call("MGET", f"{tag}:before", f"{tag}:after").render() == "[$'1000', $'1000']"
    assert c.call("RECALL", doc).value == b'{"a":1}'


# -- every door refuses a deep text when it parses it -------------------------------------------
def test_resp_refuses_documents_and_patches_past_the_limit(daemon: StashDaemon) -> None:
    """STASH, UPDATE DATA and UPDATE MERGE accept the limit and refuse one level more."""
    c = RespClient(daemon.port)
    at = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    past = b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1)
    doc = c.call("STASH", at).value
    assert c.call("RECALL", doc).value == at
    assert c.call("STASH", past).render() == f"-NOTJSON {nested_past(MAX_DEPTH + 1, 'value')}"
    assert c.call("UPDATE", doc, "DATA", past).render() == (
        f"-NOTJSON {nested_past(MAX_DEPTH + 1, 'value')}"
    )
    assert c.call("UPDATE", doc, "MERGE", deep_patch(MAX_DEPTH + 1)).render() == (
        f"-NOTJSON {nested_past(MAX_DEPTH + 1, 'merge patch')}"
    )
    assert c.call("RECALL", doc).value == at  # nothing changed
    assert c.call("PING").render() == "+PONG"


def test_http_refuses_documents_and_patches_past_the_limit(daemon: StashDaemon) -> None:
    """POST /stash and PATCH /update: 400 invalid_json naming the limit and the body's depth.

    The body's envelope is one of the levels, so data may nest MAX_DEPTH - 1 levels.
    """
    status, created = http(daemon, "POST", "/stash", nested_body("data", MAX_DEPTH - 1))
    assert status == 201
    doc = created["memory_id"]
    for method, path, field in [
        ("POST", "/stash", "data"),
        ("PATCH", f"/update/{doc}", "data"),
        ("PATCH", f"/update/{doc}", "merge"),
    ]:
        status, answer = http(daemon, method, path, nested_body(field, MAX_DEPTH))
        assert status == 400, (method, path, field)
        assert answer["error"]["code"] == "invalid_json"
        assert answer["error"]["message"] == nested_past(MAX_DEPTH + 1, "request body")
    status, answer = http(daemon, "GET", f"/recall/{doc}")
    assert status == 200
    assert answer["version"] == 1
    assert nesting(json.dumps(answer["data"]).encode()) == MAX_DEPTH - 1


def test_a_stored_value_past_the_limit_is_refused_when_read_as_json(daemon: StashDaemon) -> None:
    """A value stored before the limit (here SET raw over RESP) is never parsed past it:
    MERGE and GET /recall refuse it naming the limit, RESP reads it raw, all connections live.
    """
    c = RespClient(daemon.port)
    key = uuid.uuid4().hex[:8]
    depth = 976
    deep = b'{"x":' * depth + b"1" + b"}" * depth
    assert c.call("SET", key, deep).render() == "+OK"
    replies = pipelined(
        c, ("MULTI",), ("UPDATE", key, "MERGE", '{"y":2}'), ("SET", f"{key}:b", "1"), ("EXEC",)
    )
    assert replies[3].render() == f"[-NOTJSON {nested_past(depth, 'stored value')}, +OK]"
    assert c.call("GET", key).value == deep
    status, answer = http(daemon, "GET", f"/recall/{key}")
    assert status == 409
    assert answer["error"]["message"] == nested_past(depth, "stored value")
    assert c.call("PING").render() == "+PONG"


# -- an operation that fails with a bug, on each store in process ----------------------------------
NS = "txn"
STORES = ["memory", "sqlite", "sqlite-batched", "sqlite-full", "redis", "redis-direct"]


class Boom(Op):
    """An operation with a bug: it writes its key, then raises what no operation should."""

    __slots__ = ()

    def run(self, view: View, now: int) -> None:
        view.put(self.ns, self.key, Entry(b"half", now + HOUR_MS, 1))
        msg = "a bug in an operation"
        raise RuntimeError(msg)


def _open(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """The store ``request.param`` names, opened as the store contract suite opens it."""
    url = ""
    if request.param.startswith("redis"):
        server: RedisServer = request.getfixturevalue("redis_store")
        server.flush()
        url = server.url
    b = open_backend(request.param, Clock(START_MS), tmp_path, url)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture(params=STORES)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each store class, each way it runs operations."""
    yield from _open(request, tmp_path)


@pytest.fixture(params=["sqlite-batched", "sqlite-full", "redis"])
def batching(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each store that runs what many clients asked for as one batch."""
    yield from _open(request, tmp_path)


def put(b: Backend, key: str, value: bytes) -> None:
    b.run(Set(NS, key.encode(), value, b.store.clock() + HOUR_MS))


def value_of(b: Backend, key: str) -> tuple[bytes, int] | None:
    entry = b.run(Get(NS, key.encode()))
    return None if entry is None else (entry.value, entry.version)


def run_aborting(b: Backend, txn: Transaction) -> TransactionAborted:
    """Run ``txn`` as its store would for EXEC; its result must be TransactionAborted."""
    if b.batched:
        (result,) = b.run_many([txn])
    else:
        try:
            result = b.run(txn)
        except StashError as exc:
            result = exc
    assert isinstance(result, TransactionAborted), result
    return result


def test_a_bug_inside_exec_leaves_nothing_and_is_logged(backend: Backend) -> None:
    """Writes before the failing operation, and its own, are undone; EXEC's answer says so."""
    put(backend, "kept", b"old")
    txn = Transaction(
        [
            Set(NS, b"kept", b"new", backend.store.clock() + HOUR_MS),
            Set(NS, b"fresh", b"1", backend.store.clock() + HOUR_MS),
            Boom(NS, b"boom"),
            Set(NS, b"later", b"1", backend.store.clock() + HOUR_MS),
        ],
        [],
    )
    with capture_logs() as logs:
        aborted = run_aborting(backend, txn)
    assert aborted.wire == (
        "ERR transaction aborted by an internal error (RuntimeError); "
        "none of its commands were applied"
    )
    assert value_of(backend, "kept") == (b"old", 1)
    assert value_of(backend, "fresh") is None
    assert value_of(backend, "boom") is None
    assert value_of(backend, "later") is None
    events = [e for e in logs if e["event"] == "transaction_aborted"]
    assert events
    assert events[0]["log_level"] == "error"
    assert events[0]["operation"] == "Boom"
    assert events[0]["exc_info"] is True


def test_a_bug_after_flushdb_inside_exec_leaves_the_namespace_as_it_was(backend: Backend) -> None:
    """FLUSHDB inside the transaction is undone too: every key is back, nothing new stays."""
    put(backend, "a", b"1")
    put(backend, "b", b"2")
    txn = Transaction(
        [
            Set(NS, b"a", b"changed", backend.store.clock() + HOUR_MS),
            Flush(NS),
            Set(NS, b"c", b"3", backend.store.clock() + HOUR_MS),
            Boom(NS, b"boom"),
        ],
        [],
    )
    with capture_logs():
        run_aborting(backend, txn)
    assert value_of(backend, "a") == (b"1", 1)
    assert value_of(backend, "b") == (b"2", 1)
    assert value_of(backend, "c") is None
    assert value_of(backend, "boom") is None


def test_flushdb_inside_exec_still_applies_in_order(backend: Backend) -> None:
    """Without a failure, FLUSHDB in a transaction empties the namespace at its place."""
    put(backend, "a", b"1")
    put(backend, "b", b"2")
    later = backend.store.clock() + HOUR_MS
    txn = Transaction(
        [Set(NS, b"a", b"x", later), Flush(NS), Set(NS, b"c", b"3", later), Get(NS, b"c")],
        [],
    )
    results = backend.run_many([txn])[0] if backend.batched else backend.run(txn)
    assert results[3] is not None
    assert results[3].value == b"3"
    assert value_of(backend, "a") is None
    assert value_of(backend, "b") is None
    assert value_of(backend, "c") == (b"3", 1)


def test_a_bug_inside_exec_fails_no_other_client_s_operations(batching: Backend) -> None:
    """In a batch shared with other clients' operations, only the transaction is aborted."""
    later = batching.store.clock() + HOUR_MS
    txn = Transaction([Set(NS, b"mine", b"1", later), Boom(NS, b"boom")], [])
    with capture_logs():
        first, aborted, last = batching.run_many(
            [Set(NS, b"x", b"1", later), txn, Set(NS, b"y", b"1", later)]
        )
    assert first == (True, None)
    assert isinstance(aborted, TransactionAborted)
    assert last == (True, None)
    assert value_of(batching, "x") == (b"1", 1)
    assert value_of(batching, "y") == (b"1", 1)
    assert value_of(batching, "mine") is None
    assert value_of(batching, "boom") is None


def test_exec_after_an_aborted_transaction_reads_on(daemon: StashDaemon) -> None:
    """The connection that sent a refused transaction keeps serving: CLOSED never appears."""
    c = RespClient(daemon.port)
    replies = pipelined(c, ("MULTI",), ("UPDATE", "x", "MERGE", deep_patch(5000)), ("EXEC",))
    assert CLOSED not in replies
    assert replies[2].render() == f"[-NOTJSON {nested_past(5000, 'merge patch')}]"
    assert c.call("PING").render() == "+PONG"
