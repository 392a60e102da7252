"""A Lua script (EVAL) as one operation: every command it runs, inside one atomic unit."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from stashd.ops.base import NO_WORK, Op, Slot, Touch
from stashd.ops.transaction import Undoable

if TYPE_CHECKING:
    from collections.abc import Callable

    from stashd.errors import StashError
    from stashd.types import View

#: How the work of each command a script runs beyond its first is counted: as walking
#: this many entries, one rate-limit unit (stashd.cost.ENTRIES_PER_UNIT), so a script
#: costs what its commands would cost sent one by one.
ENTRIES_PER_CALL: Final = 100


class Stop(Exception):
    """Raised by a body whose script was stopped (time limit, memory): nothing it wrote stays."""

    def __init__(self, error: StashError) -> None:
        super().__init__(error.wire)
        self.error = error


class Script(Op):
    """EVAL and its kin: the script's commands run one after the other, nothing between.

    It declares the script's KEYS (a store fetches them ahead); a key a command of the
    script names beyond them is asked of the view like any other (on Redis, fetched in
    another round and the script run again). The commands' operations run on an
    :class:`~stashd.ops.Undoable` over the store's view: a script that runs to its end,
    or fails with an error as Redis scripts do, keeps what it wrote; one the sandbox
    stopped (its time limit, its memory cap) keeps nothing and answers the stop's error.
    The result is the script's reply (a StashError among them).
    """

    __slots__ = ("body", "busy_after_ms", "keys", "ran")
    KEYED = False
    WORKS = True
    RUNS_LONG = True

    def __init__(
        self,
        ns: str,
        keys: list[bytes],
        body: Callable[[View, int, list[tuple[Op | None, Any]]], Any],
        writes: bool,
        busy_after_ms: int,
    ) -> None:
        super().__init__(ns)
        self.keys = keys
        self.body = body
        self.writes = writes
        # Past this, other clients are answered BUSY until it ends (lua-time-limit).
        self.busy_after_ms = busy_after_ms
        # A script may walk its namespace (SCAN, KEYS, DBSIZE): it is planned as one
        # that touches it all, so it runs alone, after the operations before it landed.
        self.touch = Touch.SPACE
        self.ran: list[tuple[Op | None, Any]] = []

    def slots(self) -> list[Slot]:
        """Its KEYS."""
        ns = self.ns
        return [(ns, key) for key in self.keys]

    @property
    def size(self) -> int:
        """Its KEYS, and never few enough to be answered as a small read."""
        return max(len(self.keys), 1 << 16)

    def run(self, view: View, now: int) -> Any:  # noqa: ANN401 - the script's reply
        """Run the script; undo its writes if the sandbox stopped it."""
        ran: list[tuple[Op | None, Any]] = []
        self.ran = ran
        undoable = Undoable(view, now)
        try:
            reply = self.body(undoable, now, ran)
        except Stop as stop:
            undoable.undo()
            ran.clear()
            raise stop.error from None
        except Exception as exc:
            if exc is not undoable.fault:
                undoable.undo()
            raise
        undoable.commit()
        return reply

    def work(self, result: Any) -> tuple[int, int]:  # noqa: ANN401, ARG002 - any reply
        """What its commands' operations did, and one unit for each command beyond the first."""
        ran = self.ran
        if not ran:
            return NO_WORK
        # Past the first entry of a unit, the rate limit charges the next unit.
        entries = ENTRIES_PER_CALL * (len(ran) - 1) + 1 if len(ran) > 1 else 0
        nbytes = 0
        for op, res in ran:
            if op is None:
                continue
            e, b = op.work(res)
            entries += e
            nbytes += b
        return entries, nbytes
