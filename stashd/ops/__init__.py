"""Atomic operations on one namespace: the data semantics every store runs the same way.

An operation is built by the memory service (which has already applied the caller's
limits and resolved relative TTLs) and run by a store against its :class:`View` inside
one atomic unit. It reads, decides, and only then writes, so an operation that raises
has changed nothing. Results are domain values (entries, counts); the command layer
turns them into wire replies.

Each operation also declares what it touches, so stores plan it without knowing its
class: :class:`Touch` (a plain read of its keys, a write of its keys, or a whole
namespace), :meth:`Op.slots` and :meth:`Op.usage_read` (what it will read),
:meth:`Op.fresh` (one new entry a store may insert without reading) and
:meth:`Op.work` (what its request did not show, for the rate limit).

The kinds live by family: :mod:`~stashd.ops.base` (what every operation is, and the
rules they share), :mod:`~stashd.ops.entries` (the entries of given keys),
:mod:`~stashd.ops.containers` (hashes, lists, sets), :mod:`~stashd.ops.moves`
(RENAME, COPY), :mod:`~stashd.ops.leases` (LEASE),
:mod:`~stashd.ops.namespace` (a whole namespace) and :mod:`~stashd.ops.transaction`
(MULTI/EXEC); this package is where callers find them all.
"""

from __future__ import annotations

from stashd.ops.base import (
    INT64_MAX,
    INT64_MIN,
    NO_WORK,
    Op,
    Slot,
    Touch,
    capped_ttl,
    check_payload,
    check_put,
    entry_work,
    next_version,
    parse_int64,
    read_kind,
    read_string,
    ttl_seconds_up,
    walked_work,
)
from stashd.ops.containers import (
    KEEP,
    Edit,
    EditFirst,
    EditTwo,
    Inspect,
    InspectMany,
    StoreFrom,
    put_container,
    put_containers,
)
from stashd.ops.entries import (
    Append,
    Create,
    Delete,
    Expire,
    FirstIds,
    Forget,
    Get,
    GetDel,
    GetEx,
    GetMany,
    IncrBy,
    Set,
    SetMany,
    Update,
    UpdateEntry,
)
from stashd.ops.leases import (
    TOKENS_PER_MS,
    LeaseAnswer,
    LeaseClaim,
    LeaseRelease,
    LeaseRenew,
    LeaseState,
    held_lease,
    unpack_lease,
)
from stashd.ops.moves import Copy, Rename
from stashd.ops.namespace import (
    Count,
    Flush,
    Keyspace,
    Page,
    Ping,
    RandomKey,
    Scan,
    Usage,
)
from stashd.ops.script import Script, Stop
from stashd.ops.transaction import (
    Transaction,
    Undoable,
    snapshot,
)

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "KEEP",
    "NO_WORK",
    "TOKENS_PER_MS",
    "Append",
    "Copy",
    "Count",
    "Create",
    "Delete",
    "Edit",
    "EditFirst",
    "EditTwo",
    "Expire",
    "FirstIds",
    "Flush",
    "Forget",
    "Get",
    "GetDel",
    "GetEx",
    "GetMany",
    "IncrBy",
    "Inspect",
    "InspectMany",
    "Keyspace",
    "LeaseAnswer",
    "LeaseClaim",
    "LeaseRelease",
    "LeaseRenew",
    "LeaseState",
    "Op",
    "Page",
    "Ping",
    "RandomKey",
    "Rename",
    "Scan",
    "Script",
    "Set",
    "SetMany",
    "Slot",
    "Stop",
    "StoreFrom",
    "Touch",
    "Transaction",
    "Undoable",
    "Update",
    "UpdateEntry",
    "Usage",
    "capped_ttl",
    "check_payload",
    "check_put",
    "entry_work",
    "held_lease",
    "next_version",
    "parse_int64",
    "put_container",
    "put_containers",
    "read_kind",
    "read_string",
    "snapshot",
    "ttl_seconds_up",
    "unpack_lease",
    "walked_work",
]
