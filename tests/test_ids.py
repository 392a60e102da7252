"""Ids: 8 base62 characters from the OS CSPRNG, uniform, unique, a UUID as the last resort.

Ids come in blocks that share a random prefix and ascend (so a batch of new ids lands in
one place of an index); each id is still uniform, which is what the tests check.
"""

from __future__ import annotations

import collections
import re
import threading
from typing import TYPE_CHECKING

from stashd import ops, service
from stashd.service import BASE62, PREFIX_LENGTH, new_id

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


def test_ids_are_base62_and_every_character_after_the_prefix_is_equally_likely() -> None:
    """Over 40,000 ids each of the 62 characters fills its share of the random part."""
    ids = [new_id(0) for _ in range(40_000)]
    assert all(re.fullmatch(rb"[0-9A-Za-z]{8}", i) for i in ids)
    assert len(set(ids)) == len(ids)
    _uniform([c for i in ids for c in i[PREFIX_LENGTH:].decode()])


def test_prefixes_of_fresh_blocks_are_uniform() -> None:
    """The shared prefix is drawn anew for every block, every character equally likely."""
    firsts = []
    for _ in range(2000):
        service._reset_pool()
        firsts.append(new_id(0))
    _uniform([c for i in firsts for c in i[:PREFIX_LENGTH].decode()])


def test_ids_in_a_row_ascend_and_share_their_prefix_within_a_block() -> None:
    """One block's ids come out sorted, all with one prefix: a batch of them is one index range."""
    service._reset_pool()
    row = [new_id(0) for _ in range(1000)]
    assert row == sorted(row)
    assert len({i[:PREFIX_LENGTH] for i in row}) == 1
    assert len(set(row)) == len(row)


def test_threads_never_share_an_id_and_the_last_try_is_a_uuid() -> None:
    """Ids drawn on several threads at once are all distinct; attempt TRIES gives a UUID."""
    out: list[bytes] = []

    def draw() -> None:
        out.extend(new_id(0) for _ in range(5000))

    threads = [threading.Thread(target=draw) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(out)) == 20_000
    assert re.fullmatch(rb"[0-9a-f]{32}", new_id(ops.Create.TRIES))


def test_a_block_never_holds_the_same_id_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids of a block share a prefix, so their 5 random characters can repeat: never handed out twice."""
    calls = iter(range(1, 200))

    def repeating(n: int) -> bytes:
        k = next(calls)  # a prefix of its own per block, then one suffix over and over
        return (bytes([k, k, k]) + bytes([1, 2, 3, 4, 5]) * n)[:n]

    monkeypatch.setattr(service.secrets, "token_bytes", repeating)
    service._reset_pool()
    drawn = [new_id(0) for _ in range(50)]
    assert len(set(drawn)) == len(drawn)
    service._reset_pool()
