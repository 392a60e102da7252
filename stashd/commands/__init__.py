"""The command table: lower-case name -> :class:`Command`, one module per family.

Aliases are rows that share a handler (DEL and UNLINK), never copies of code. The table
itself lives in :mod:`stashd.commands.base`, which every family imports, so the families
that read it (EXEC, COMMAND) need nothing from this module and no import goes in a circle.
"""

from __future__ import annotations

from stashd.commands import (
    bits,
    blocking,
    catalog,
    connection,
    hashes,
    keys,
    leases,
    lists,
    objects,
    pubsub,
    ranges,
    scripting,
    server,
    sets,
    stash,
    strings,
    transactions,
    zsets,
    zsets_combine,
    zsets_read,
)
from stashd.commands.base import TABLE

__all__ = ["TABLE"]

for _family in (
    connection,
    strings,
    ranges,
    bits,
    keys,
    objects,
    hashes,
    lists,
    sets,
    blocking,
    zsets,
    zsets_read,
    zsets_combine,
    stash,
    leases,
    transactions,
    scripting,
    pubsub,
    server,
    catalog,
):
    for _cmd in _family.COMMANDS:
        assert _cmd.name.encode() not in TABLE, f"{_cmd.name} registered twice"
        TABLE[_cmd.name.encode()] = _cmd
