"""SQLite's direct path for one-row reads: no transaction of its own, nothing left open."""

from __future__ import annotations

from pathlib import Path

import pytest

from stashd.ops import Get, GetMany, Inspect, Op
from stashd.service import MemoryService
from stashd.store.sqlite import OneReadView, SQLiteStore
from stashd.types import Entry, Limits, Principal

WHO = Principal("ns", Limits(1000, 60_000, 3_600_000))


def test_only_single_row_reads_are_marked() -> None:
    """GET and a container's read are one row, one statement; MGET and writes need more."""
    assert Get.ONE_READ
    assert Inspect.ONE_READ
    assert not GetMany.ONE_READ
    assert not Op.ONE_READ
    assert sorted(c.__name__ for c in _all(Op) if c.ONE_READ) == ["Get", "Inspect"]


def _all(cls: type[Op]) -> list[type[Op]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out += _all(sub)
    return out


def test_a_direct_get_sees_every_commit_and_leaves_no_transaction(tmp_path: Path) -> None:
    """Each read is a fresh snapshot: another connection's commit shows at once."""
    now = [1_000_000]
    store = SQLiteStore(tmp_path / "s.db", lambda: now[0])
    other = SQLiteStore(tmp_path / "s.db", lambda: now[0])
    svc, other_svc = MemoryService(store), MemoryService(other)
    assert store.run(svc.get(WHO, b"k")) is None
    other.run(other_svc.set(WHO, b"k", b"1"))
    entry = store.run(svc.get(WHO, b"k"))
    assert isinstance(entry, Entry)
    assert (entry.value, entry.version) == (b"1", 1)
    assert not store._own(wait=True).conn.in_transaction
    other.run(other_svc.set(WHO, b"k", b"2"))
    assert store.run(svc.get(WHO, b"k")).value == b"2"
    now[0] += 60_000  # the default TTL has passed: expired means gone
    assert store.run(svc.get(WHO, b"k")) is None
    store.close_threads()
    other.close_threads()


def test_the_one_read_view_refuses_anything_else(tmp_path: Path) -> None:
    """An operation wrongly marked ONE_READ fails loudly instead of writing outside a transaction."""
    store = SQLiteStore(tmp_path / "s.db")
    view = store._own(wait=True).one
    assert isinstance(view, OneReadView)
    with pytest.raises(AssertionError, match="marked ONE_READ did more than read one row"):
        view.put("ns", b"k", Entry(b"v", 1, 1))
    with pytest.raises(AssertionError):
        view.scan("ns", 0, 10, 0)
    store.close_threads()
