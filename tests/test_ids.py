"""Ids: 8 base62 characters from the OS CSPRNG, uniform, unique, a UUID as the last resort."""

from __future__ import annotations

import collections
import re
import threading

from stashd import ops
from stashd.service import BASE62, new_id


def test_ids_are_base62_and_every_character_is_equally_likely() -> None:
    """Over 40,000 ids each of the 62 characters shows up within 10% of its share."""
    ids = [new_id(0) for _ in range(40_000)]
    assert all(re.fullmatch(rb"[0-9A-Za-z]{8}", i) for i in ids)
    assert len(set(ids)) == len(ids)
    counts = collections.Counter(c for i in ids for c in i.decode())
    assert set(counts) == set(BASE62)
    share = 8 * len(ids) / 62
    assert all(0.9 * share < n < 1.1 * share for n in counts.values()), counts


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
