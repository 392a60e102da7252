"""Write events: each kind of write's line reads as structlog would render the same event."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
import structlog

from stashd import ops
from stashd.events import DESCRIBE, WriteEvents
from stashd.types import Entry

NOW = 1_800_000_000_000
NS = "ns:1"


def _cases() -> list[tuple[ops.Op, Any, str, dict[str, Any]]]:
    """(operation, its result, the event, the fields it must carry) for every kind."""
    later = NOW + 600_000
    forget = ops.Forget(NS, [b"id1"])
    return [
        (ops.Create(NS, b'{"a":1}', later, lambda _: b"id1"), b"id1", "stash_created",
         {"id": "id1", "ttl_seconds": 600, "payload_bytes": 7}),
        (ops.Set(NS, b"k1", b"xyz", later), (True, None), "key_set",
         {"key": "k1", "ttl_seconds": 600, "payload_bytes": 3}),
        (ops.SetMany(NS, [(b"a", b"1"), (b"b", b"22")], later), True, "key_set",
         {"keys": 2, "ttl_seconds": 600, "payload_bytes": 3}),
        (ops.Delete(NS, [b"a"]), 1, "key_deleted", {"key": "a", "removed": 1}),
        (ops.Delete(NS, [b"a", b"b"]), 2, "key_deleted", {"keys": 2, "removed": 2}),
        (forget, 1, "stash_forgotten", {"id": "id1", "removed": 1}),
        (ops.GetDel(NS, b"a"), Entry(b"1", later, 1), "key_deleted", {"key": "a", "removed": 1}),
        (ops.GetEx(NS, b"a", later), Entry(b"1", later, 1), "key_expiry_set",
         {"key": "a", "ttl_seconds": 600}),
        (ops.Expire(NS, b"a", later, b"", 10**9), 1, "key_expiry_set",
         {"key": "a", "ttl_seconds": 600}),
        (ops.IncrBy(NS, b"n", 1, later), 5, "key_incremented", {"key": "n"}),
        (ops.Append(NS, b"a", b"x", later, 100), 4, "key_appended",
         {"key": "a", "payload_bytes": 4}),
        (ops.Rename(NS, b"a", b"b"), True, "key_renamed", {"key": "a"}),
        (ops.Copy(NS, b"a", b"c"), True, "key_copied", {"key": "a"}),
        (ops.Flush(NS), None, "namespace_flushed", {"removed": 0}),
        (_edited(b"h", 42), 1, "key_changed", {"key": "h", "payload_bytes": 42}),
        (_moved(b"src", b"dst"), b"v", "key_moved", {"key": "src"}),
        (_stored(b"out", 12), 2, "key_stored", {"key": "out", "payload_bytes": 12}),
        (_popped(b"z2", 0), (b"z2", []), "key_changed", {"key": "z2", "payload_bytes": 0}),
    ]  # fmt: skip


def _edited(key: bytes, written: int) -> ops.Edit:
    """A container edit that wrote ``written`` bytes."""
    op = ops.Edit(NS, key, 2, lambda v: (v, 1), NOW, 100)
    op.written = written
    return op


def _moved(src: bytes, dst: bytes) -> ops.EditTwo:
    """A move between two containers."""
    return ops.EditTwo(NS, src, dst, (3, 3), lambda a, b: (a, b, b"v"), NOW, 100)


def _stored(dst: bytes, written: int) -> ops.StoreFrom:
    """A sorted set stored from others (ZUNIONSTORE) that wrote ``written`` bytes."""
    op = ops.StoreFrom(NS, dst, [b"a", b"b"], ((5, 4), 5), lambda _: (None, 0), NOW, 100)
    op.written = written
    return op


def _popped(key: bytes, written: int) -> ops.EditFirst:
    """A pop from the first of several sorted sets (ZMPOP) that left ``written`` bytes."""
    op = ops.EditFirst(NS, [b"z1", key], 5, lambda v: (v, []), NOW, 100)
    op.key = key
    op.written = written
    return op


def test_every_kind_of_write_has_a_case() -> None:
    """A new kind of write in DESCRIBE gets a case here, so its line is checked."""
    assert {type(op) for op, *_ in _cases()} | {ops.Update, ops.UpdateEntry} == set(DESCRIBE)


def _structlog_line(renderer: Any, name: str, fields: dict[str, Any], stamp: str) -> str:  # noqa: ANN401
    event = {**fields, "event": name, "level": "info", "timestamp": stamp}
    rendered: str = renderer(None, "info", event)
    return rendered


@pytest.mark.parametrize("fmt", ["json", "console"])
@pytest.mark.parametrize("door", [None, "http"])
def test_lines_read_as_structlog_renders_them(fmt: str, door: str | None) -> None:
    """Each event, in each format, is the line structlog's own renderer gives its fields."""
    out = io.StringIO()
    events = WriteEvents(fmt, lambda: NOW, out)
    cases = _cases()
    for op, result, _, _ in cases:
        events.note(op, result, door)  # no loop running: written at once
    lines = out.getvalue().splitlines()
    assert len(lines) == len(cases)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    stamp = "2027-01-15T08:00:00.000000Z"
    for line, (_, _, name, fields) in zip(lines, cases, strict=True):
        expected = {**({"door": door} if door else {}), "namespace": NS, **fields}
        want = _structlog_line(renderer, name, expected, stamp)
        if fmt == "json":
            assert json.loads(line) == json.loads(want)
            assert line == want  # field order and spacing too
        else:
            assert line.split() == want.split()


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_a_key_cannot_forge_a_log_line(fmt: str) -> None:
    """A key with a newline, quotes or spaces stays on its line, written as a JSON string."""
    out = io.StringIO()
    key = 'a"\\ b\n{"event": "forged"} \u00e9'
    WriteEvents(fmt, lambda: NOW, out).note(ops.Set(NS, key.encode(), b"1", NOW), (True, None))
    (line,) = out.getvalue().splitlines()
    if fmt == "json":
        assert json.loads(line)["key"] == key
        assert line.isascii()  # as structlog writes JSON
    else:
        assert f"key={json.dumps(key)} " in line


def test_writes_that_changed_nothing_are_not_logged() -> None:
    """SET NX that found a key, EXPIRE of a missing key, MSETNX, RENAMENX, COPY: no event."""
    out = io.StringIO()
    events = WriteEvents("json", lambda: NOW, out)
    events.note(ops.Set(NS, b"a", b"1", NOW + 1000, cond=b"NX"), (False, Entry(b"0", NOW, 1)))
    events.note(ops.Expire(NS, b"a", NOW + 1000, b"", 10**9), 0)
    events.note(ops.GetDel(NS, b"a"), None)
    # MSETNX, RENAMENX and COPY that found a key in use wrote nothing.
    events.note(ops.SetMany(NS, [(b"a", b"1")], NOW + 1000, only_new=True), False)
    events.note(ops.Rename(NS, b"a", b"b", nx=True), False)
    events.note(ops.Copy(NS, b"a", b"b"), False)
    assert out.getvalue() == ""


def test_a_transaction_logs_each_write_that_ran() -> None:
    """EXEC's writes are logged one by one; a refused one and a read are not."""
    out = io.StringIO()
    events = WriteEvents("json", lambda: NOW, out)
    inner = [ops.Set(NS, b"a", b"1", NOW + 5000), ops.Get(NS, b"a"), ops.Set(NS, b"b", b"", 1)]
    from stashd.errors import SyntaxErr  # noqa: PLC0415 - only this test needs it

    events.note(ops.Transaction(inner, []), [(True, None), Entry(b"1", NOW, 1), SyntaxErr()])
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(e["event"], e["key"]) for e in lines] == [("key_set", "a")]
    events.note(ops.Transaction(inner, []), None)  # a WATCHed key changed: nothing ran
    assert len(out.getvalue().splitlines()) == 1
