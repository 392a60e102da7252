"""Ids: 8 base62 characters from the OS CSPRNG, uniform, unique, a UUID as the last resort.

Ids come in blocks of one namespace's own that share a random prefix and ascend from a
random one of them (so a batch of new ids lands in one place of an index); each id is
still uniform, which is what the tests check.
"""

from __future__ import annotations

import collections
import re
import threading
from typing import TYPE_CHECKING

from stashd import ids, ops
from stashd.ids import BASE62, IDLE_S, PREFIX_LENGTH, IdPools

if TYPE_CHECKING:
    import pytest


def _uniform(chars: list[str]) -> None:
    """Pearson's chi-squared over the 62 characters (61 degrees of freedom) below 130.

    A uniform source passes that bound in all but about one run in ten million; a
    skewed one (a character twice as likely, a constant prefix) lands far above it.
    """
    counts = collections.Counter(chars)
    assert set(counts) == set(BASE62)
    expected = len(chars) / 62
    chi2 = sum((counts[c] - expected) ** 2 / expected for c in BASE62)
    assert chi2 < 130, counts


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _descents(row: list[bytes]) -> int:
    return sum(a > b for a, b in zip(row, row[1:], strict=False))


def test_ids_are_base62_and_every_character_after_the_prefix_is_equally_likely() -> None:
    """Over 40,000 ids of one namespace each of the 62 characters fills its share of the random part."""
    pools = IdPools()
    drawn = [pools.draw("a", 0) for _ in range(40_000)]
    assert all(re.fullmatch(rb"[0-9A-Za-z]{8}", i) for i in drawn)
    assert len(set(drawn)) == len(drawn)
    _uniform([c for i in drawn for c in i[PREFIX_LENGTH:].decode()])


def test_first_ids_of_fresh_blocks_are_uniform_prefix_and_all() -> None:
    """A namespace's first id is uniform in every character: a block starts at a random id, not its smallest."""
    pools = IdPools()
    firsts = [pools.draw(f"ns{n}", 0) for n in range(2000)]
    _uniform([c for i in firsts for c in i[:PREFIX_LENGTH].decode()])
    _uniform([c for i in firsts for c in i[PREFIX_LENGTH : PREFIX_LENGTH + 2].decode()])


def test_ids_in_a_row_share_their_prefix_and_ascend_but_for_one_wrap_per_block() -> None:
    """One block's ids have one prefix and ascend from a random one, wrapping once: two index ranges."""
    pools = IdPools()
    row = [pools.draw("a", 0) for _ in range(3000)]
    assert len(set(row)) == len(row)
    blocks: dict[bytes, list[bytes]] = {}
    for i in row:
        blocks.setdefault(i[:PREFIX_LENGTH], []).append(i)
    # Blocks grow from ~74 ids to ~1,190: 3,000 ids take a handful of them.
    assert 3 <= len(blocks) <= 8
    assert all(_descents(b) <= 1 for b in blocks.values())
    assert len(blocks[row[0][:PREFIX_LENGTH]]) < len(blocks[row[-1][:PREFIX_LENGTH]])


def test_namespaces_draw_from_blocks_of_their_own() -> None:
    """Ids drawn for another namespace in between leave a namespace's run of ids unbroken."""
    pools = IdPools()
    alone = [pools.draw("a", 0) for _ in range(50)]
    mixed = []
    for _ in range(50):
        mixed.append(pools.draw("b", 0))
        mixed.extend(pools.draw("c", 0) for _ in range(7))
    b_ids = mixed[::8]
    for run in (alone, b_ids):
        assert len({i[:PREFIX_LENGTH] for i in run}) == 1
        assert _descents(run) <= 1
    assert not {i[:PREFIX_LENGTH] for i in b_ids} & {i[:PREFIX_LENGTH] for i in mixed[1::8]}


def test_an_idle_block_is_dropped_by_its_own_pause_only() -> None:
    """A block unused past IDLE_S starts over whether or not others drew; others' idle blocks are freed."""
    clock = Clock()
    pools = IdPools(clock)
    for _ in range(3):
        pools.draw("a", 0)
    assert pools.held() == 1
    clock.now += IDLE_S / 2
    busy = [pools.draw("b", 0) for _ in range(5)]
    clock.now += IDLE_S / 2 + 1  # a is past IDLE_S, b is not
    pools.draw("b", 0)
    assert pools.held() == 1  # a's block freed by b's draw
    again = pools.draw("a", 0)
    assert pools.held() == 2
    assert len(busy) == 5
    assert re.fullmatch(rb"[0-9A-Za-z]{8}", again)
    # Within IDLE_S a namespace keeps its block, however many other namespaces draw.
    first = pools.draw("c", 0)
    for n in range(500):
        pools.draw(f"other{n}", 0)
    assert pools.draw("c", 0)[:PREFIX_LENGTH] == first[:PREFIX_LENGTH]


def test_threads_never_share_an_id_and_the_last_try_is_a_uuid() -> None:
    """Ids drawn on several threads at once are all distinct; attempt TRIES gives a UUID."""
    pools = IdPools()
    out: list[bytes] = []

    def draw() -> None:
        out.extend(pools.draw("a", 0) for _ in range(5000))

    threads = [threading.Thread(target=draw) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(out)) == 20_000
    assert re.fullmatch(rb"[0-9a-f]{32}", pools.draw("a", ops.Create.TRIES))


def test_a_block_never_holds_the_same_id_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids of a block share a prefix, so their 5 random characters can repeat: never handed out twice."""
    calls = iter(range(1, 200))

    def repeating(n: int) -> bytes:
        k = next(calls)  # a prefix of its own per block, then one suffix over and over
        return (bytes([k, k, k]) + bytes([1, 2, 3, 4, 5]) * n)[:n]

    monkeypatch.setattr(ids.secrets, "token_bytes", repeating)
    pools = IdPools()
    drawn = [pools.draw("a", 0) for _ in range(50)]
    assert len(set(drawn)) == len(drawn)
