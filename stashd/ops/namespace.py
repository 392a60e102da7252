"""Operations on a whole namespace: SCAN, listings, counts, usage and FLUSHDB, and PING."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, Final

from stashd.glob import compile_glob
from stashd.ops.base import (
    INT64_MAX,
    NO_WORK,
    Op,
    Touch,
    walked_work,
)
from stashd.types import KIND_BY_NAME

if TYPE_CHECKING:
    from collections.abc import Callable

    from stashd.types import Entry, View


class Scan(Op):
    """SCAN/KEYS: one page of keys matching a glob; cursor 0 in the result means done.

    ``count`` bounds the entries examined, as Redis's COUNT does, so a page may come back
    short or empty before the end. ``kind`` filters by TYPE's name (a name Redis 7.0
    does not know matches nothing, as there).
    ``walked`` is how many entries the page read, matching or not, for the rate limit.
    """

    __slots__ = ("count", "cursor", "kind", "pattern", "walked")
    KEYED = False
    WRITES = False
    TOUCH = Touch.SPACE

    def __init__(
        self, ns: str, cursor: int, count: int, pattern: bytes | None, kind: bytes | None
    ) -> None:
        super().__init__(ns)
        self.cursor = cursor
        self.count = count
        self.pattern = pattern
        self.kind = kind
        self.walked = 0

    WORKS = True

    def work(self, result: Any) -> tuple[int, int]:  # noqa: ANN401 - any result
        """The entries the page read."""
        return walked_work(self.walked, result)

    def run(self, view: View, now: int) -> tuple[int, list[bytes]]:
        """Read one page."""
        if self.cursor > INT64_MAX:
            # SCAN takes cursors up to 2**64 - 1, as Redis does; no store hands out one
            # past a signed 64-bit number, so such a cursor is past the end.
            return 0, []
        nxt, items = view.scan(self.ns, self.cursor, self.count, now)
        self.walked = len(items)
        if self.kind is None:
            keys = [k for k, _ in items]
        else:
            want = KIND_BY_NAME.get(self.kind.lower())
            keys = [k for k, e in items if e.kind == want]
        match = matcher(self.pattern)
        if match is not None:
            keys = [k for k in keys if match(k)]
        return nxt, keys


def matcher(pattern: bytes | None) -> Callable[[bytes], object] | None:
    """The glob test SCAN's MATCH and listings apply to keys; None when all keys match."""
    if pattern is None or pattern == b"*":
        return None
    return compile_glob(pattern).match


class Page(Op):
    """A page of live entries with their metadata, for listings: up to ``limit`` of them.

    Unlike :class:`Scan`, it keeps reading until the page is full or the namespace ends
    (at most ``limit * ROUNDS`` entries examined, so a namespace full of expired entries
    cannot make one request unbounded); the result is ``(next_cursor, [(key, entry)])``
    with cursor 0 at the end. ``pattern`` keeps only keys matching the glob, tested as
    :class:`Scan` tests MATCH. ``walked`` is how many entries it read, matching or not,
    for the rate limit.
    """

    __slots__ = ("cursor", "limit", "pattern", "walked")
    KEYED = False
    WRITES = False
    TOUCH = Touch.SPACE

    #: Scan rounds per page: bounds the work of one request.
    ROUNDS: Final = 8

    def __init__(self, ns: str, cursor: int, limit: int, pattern: bytes | None = None) -> None:
        super().__init__(ns)
        self.cursor = cursor
        self.limit = limit
        self.pattern = pattern
        self.walked = 0

    WORKS = True

    def work(self, result: Any) -> tuple[int, int]:  # noqa: ANN401 - any result
        """The entries it read."""
        return walked_work(self.walked, result)

    def run(self, view: View, now: int) -> tuple[int, list[tuple[bytes, Entry]]]:
        """Read until the page is full, the namespace ends, or the rounds run out."""
        cursor = self.cursor
        match = matcher(self.pattern)
        out: list[tuple[bytes, Entry]] = []
        walked = 0
        for _ in range(self.ROUNDS):
            cursor, items = view.scan(self.ns, cursor, self.limit - len(out), now)
            walked += len(items)
            out.extend(items if match is None else [(k, e) for k, e in items if match(k)])
            if cursor == 0 or len(out) >= self.limit:
                break
        self.walked = walked
        return cursor, out


class Ping(Op):
    """A round trip through the store that touches no data: the health check."""

    __slots__ = ()
    KEYED = False
    WRITES = False
    TOUCH = Touch.READ  # of no key: a round trip and nothing else

    def run(self, view: View, now: int) -> bool:  # noqa: ARG002 - part of the Op signature
        """Nothing to do: reaching here proves the store runs operations."""
        return True


class Count(Op):
    """DBSIZE: live keys in the namespace."""

    __slots__ = ()
    KEYED = False
    WRITES = False
    TOUCH = Touch.SPACE

    WORKS = True

    def work(self, result: Any) -> tuple[int, int]:  # noqa: ANN401 - the count | error
        """The keys counted."""
        return (result, 0) if type(result) is int else NO_WORK

    def run(self, view: View, now: int) -> int:
        """Count."""
        return view.count(self.ns, now)


#: How many entries INFO's ``avg_ttl`` is averaged over: every key of a namespace up to
#: this many, so the figure is exact for most; past it, a sample (as Redis's figure is
#: one), so INFO costs one bounded SCAN page however large the namespace is.
AVG_TTL_SAMPLE: Final = 10_000
#: How many entries RANDOMKEY draws from: the first this many in SCAN order.
RANDOM_SAMPLE: Final = 1000


class RandomKey(Op):
    """RANDOMKEY: a live key drawn uniformly from the first RANDOM_SAMPLE in SCAN order.

    A namespace of at most that many keys is drawn from whole, as Redis does; a larger
    one from its first page, so the work stays one bounded page (SPEC, Differences).
    """

    __slots__ = ("walked",)
    KEYED = False
    WRITES = False
    TOUCH = Touch.SPACE
    WORKS = True

    def __init__(self, ns: str) -> None:
        super().__init__(ns)
        self.walked = 0

    def work(self, result: Any) -> tuple[int, int]:  # noqa: ANN401 - any result
        """The entries the page read."""
        return walked_work(self.walked, result)

    def run(self, view: View, now: int) -> bytes | None:
        """Draw one key of the first page."""
        _, items = view.scan(self.ns, 0, RANDOM_SAMPLE, now)
        self.walked = len(items)
        return random.choice(items)[0] if items else None  # noqa: S311 - not for secrets


class Usage(Op):
    """The live keys, and what the namespace holds as quotas count it.

    The result is ``(live_keys, keys, bytes)``; see :meth:`View.usage` for how held keys
    and bytes differ from live keys.
    """

    __slots__ = ()
    KEYED = False
    WRITES = False
    TOUCH = Touch.SPACE

    WORKS = True

    def work(self, result: Any) -> tuple[int, int]:  # noqa: ANN401 - (live, keys, bytes) | error
        """The live keys counted."""
        return (result[0], 0) if type(result) is tuple else NO_WORK

    def run(self, view: View, now: int) -> tuple[int, int, int]:
        """Count, and read the usage."""
        keys, size = view.usage(self.ns, now)
        return view.count(self.ns, now), keys, size

    def usage_read(self) -> list[str]:
        """Its namespace, whatever the quota."""
        return [self.ns]


class Keyspace(Usage):
    """INFO keyspace: :class:`Usage`, and the mean time left in ms, as Redis's ``avg_ttl``.

    The result is ``(live_keys, keys, bytes, avg_ttl_ms)``; the mean is over the first
    SCAN page of at most :data:`AVG_TTL_SAMPLE` entries (0 when there are none), which
    is every key of all but the largest namespaces.
    """

    __slots__ = ()

    # The wider result is only ever read by INFO, which asks for this operation by name.
    def run(self, view: View, now: int) -> tuple[int, int, int, int]:  # type: ignore[override]
        """The usage, and the average of a sample's time left."""
        _, sample = view.scan(self.ns, 0, AVG_TTL_SAMPLE, now)
        left = [entry.expires_at - now for _, entry in sample]
        return (*super().run(view, now), sum(left) // len(left) if left else 0)


class Flush(Op):
    """FLUSHDB/FLUSHALL: empty the caller's namespace, and only that.

    ``freed`` is how many keys it held (expired ones not yet swept included), for the
    rate limit: freeing them is the work.
    """

    __slots__ = ("freed",)
    KEYED = False
    TOUCH = Touch.SPACE

    def __init__(self, ns: str) -> None:
        super().__init__(ns)
        self.freed = 0

    WORKS = True

    def work(self, result: Any) -> tuple[int, int]:  # noqa: ANN401 - any result
        """The keys it freed."""
        return walked_work(self.freed, result)

    def run(self, view: View, now: int) -> None:
        """Clear."""
        self.freed = view.usage(self.ns, now)[0]
        view.clear(self.ns)

    def usage_read(self) -> list[str]:
        """Its namespace: what it frees is counted from the usage."""
        return [self.ns]
