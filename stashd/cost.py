"""What a request costs in rate-limit units: the one rule, for the RESP and HTTP doors alike.

A unit is what an ordinary command costs: one key, at most :data:`BYTES_PER_UNIT` bytes
of request, nothing walked. Every metered request costs, up front, before it runs::

    max(1, keys) + beyond(request bytes, BYTES_PER_UNIT)

where ``keys`` counts the keys it names, by the key positions its row of the command
table gives (COMMAND INFO's first key, last key and step: MSET's pairs, MGET's, DEL's,
EXISTS's keys; RENAME's two), and ``beyond(n, per)`` is the number of ``per`` started past
the first ``per`` (0 up to ``per``). Work that only running shows is charged after the
request ran, as a debt (see :mod:`stashd.ratelimit`)::

    beyond(stored bytes read and written, BYTES_PER_UNIT) + beyond(entries walked, ENTRIES_PER_UNIT)

Stored bytes are what the request did not carry: a value read back (GET, RECALL, MGET,
GETDEL, GETEX), a document read and a merged one written (UPDATE), a value appended to
(APPEND). Entries walked are what a walk read: SCAN's page, each page of KEYS, a
listing, DBSIZE's and INFO's count, the keys FLUSHDB freed. A transaction costs what its
commands cost (:func:`transaction_cost`). Commands that set up a connection
(:data:`CONNECTION`) draw on a budget of their own (:mod:`stashd.connbudget`) by the
same rule, QUIT on none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Iterable

    from stashd.commands.base import Command
    from stashd.ops import Op

#: Request bytes one unit covers: 16 KiB. Measured on the memory store (redis-benchmark
#: -c 50 SET), a request's work grows by about one small command's worth every 7 KiB:
#: values of 1 KiB run at 0.72x the rate of 10-byte ones, 16 KiB at 0.28x, 64 KiB at
#: 0.10x, 256 KiB at 0.03x. At 16 KiB a unit is worth two to three small commands, so
#: the values Stash exists to hold (a few KiB of JSON) cost one unit, while no request
#: is charged less than about a quarter of its work, whatever its size.
BYTES_PER_UNIT: Final = 16 * 1024
#: Entries one unit of walking covers: SCAN's default page (COUNT 10) and any namespace
#: of a hundred keys walk for free; SCAN COUNT 1000, the most one SCAN examines, costs 10.
ENTRIES_PER_UNIT: Final = 100

#: Commands that set up, describe or end a connection and touch no data: they cost the
#: connection budget, never the principal's. QUIT is free (it ends the connection).
CONNECTION: Final = frozenset(
    {b"auth", b"hello", b"client", b"select", b"reset", b"command", b"quit"}
)
#: The connection command that costs nothing: a client may always leave.
FREE: Final = b"quit"
#: The commands that open and close a transaction (see :func:`transaction_cost`).
TRANSACTION: Final = frozenset({b"multi", b"exec", b"discard"})


def beyond(n: int, per: int) -> int:
    """How many ``per`` started past the first ``per`` of ``n``: 0 up to ``per``."""
    return (n - 1) // per if n > per else 0


def units(keys: int = 1, nbytes: int = 0, entries: int = 0) -> int:
    """The cost of a request naming ``keys`` keys in ``nbytes`` bytes that walks ``entries``."""
    return max(1, keys) + beyond(nbytes, BYTES_PER_UNIT) + beyond(entries, ENTRIES_PER_UNIT)


def debt(entries: int = 0, nbytes: int = 0) -> int:
    """The units of work learned after a request ran: entries walked, stored bytes handled."""
    return beyond(nbytes, BYTES_PER_UNIT) + beyond(entries, ENTRIES_PER_UNIT)


def keys_named(cmd: Command | None, nargs: int) -> int:
    """How many keys a request of ``nargs`` arguments names, by its command's key positions."""
    if cmd is None or not cmd.first_key:
        return 1
    last = cmd.last_key
    if last < 0:
        last += nargs
    elif last >= nargs:
        last = nargs - 1
    return (last - cmd.first_key) // cmd.key_step + 1 if last >= cmd.first_key else 1


def command_cost(cmd: Command | None, args: list[bytes]) -> int:
    """What a RESP request costs up front; ``cmd`` is its row (None: an unknown command).

    An unknown command and one with the wrong number of arguments cost what their
    arguments say too: they are answered, and were sent.
    """
    nargs = len(args)
    if nargs == 2:  # most requests: GET key and the like, sized without a loop
        size = len(args[0]) + len(args[1])
    elif nargs == 3:
        size = len(args[0]) + len(args[1]) + len(args[2])
    else:
        size = sum(map(len, args))
    if size <= BYTES_PER_UNIT and (cmd is None or cmd.last_key == cmd.first_key):
        return 1
    return units(keys_named(cmd, nargs), size)


def transaction_cost(name: bytes, nargs: int, queue: list[list[bytes]] | None) -> int:
    """What MULTI, EXEC or DISCARD costs, given the connection's queue (None: not in MULTI).

    A transaction costs what its commands cost, each when it is queued, so MULTI that
    opens one and the EXEC or DISCARD that closes one holding commands cost nothing of
    their own: MULTI, an MSET of 20 keys and EXEC cost 20 and run on a full burst of 10,
    as the MSET alone would. Any other (a nested MULTI, EXEC without MULTI or of an empty
    transaction, one with arguments) costs one unit, as an ordinary command.
    """
    if nargs != 1:
        return 1
    if name == b"multi":
        return 0 if queue is None else 1
    return 0 if queue else 1


def body_cost(nbytes: int) -> int:
    """What an HTTP request with a body of ``nbytes`` costs up front (0 for none)."""
    return units(1, nbytes)


# -- work learned by running ----------------------------------------------------------------


def work(op: Op, result: Any) -> tuple[int, int]:  # noqa: ANN401 - each op has its own result
    """What running ``op`` did that its request did not show: (entries walked, stored bytes).

    Each operation declares it (:meth:`~stashd.ops.Op.work`) from ``result``, what it
    returned or the error it was refused with: a refused update still counts what it
    read and merged before refusing; other refusals count nothing.
    """
    return op.work(result)


def steps_debt(ops: Iterable[Op]) -> int:
    """The debt of one request that ran these operations in turn (the pages of KEYS)."""
    entries = nbytes = 0
    for op in ops:
        e, b = op.work(None)
        entries += e
        nbytes += b
    return debt(entries, nbytes)


def op_debt(op: Op, result: Any) -> int:  # noqa: ANN401 - each op has its own result
    """The debt of one operation that ran (see :func:`work`).

    Every metered command that ran comes here, so the common cases cost little: an
    operation that never learns any work (``WORKS``) a flag, and work within the first
    unit (a GET of an ordinary value) two comparisons.
    """
    if not op.WORKS:
        return 0
    entries, nbytes = op.work(result)
    if nbytes <= BYTES_PER_UNIT and entries <= ENTRIES_PER_UNIT:
        return 0
    return debt(entries, nbytes)
