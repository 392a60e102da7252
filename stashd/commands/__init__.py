"""The command table: lower-case name -> :class:`Command`, one module per family.

Aliases are rows that share a handler (DEL and UNLINK), never copies of code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stashd.commands.base import Command

TABLE: dict[bytes, Command] = {}


def _register(commands: tuple[Command, ...]) -> None:
    for cmd in commands:
        assert cmd.name.encode() not in TABLE, f"{cmd.name} registered twice"
        TABLE[cmd.name.encode()] = cmd


def _load() -> None:
    """Import every family and register its rows (server.py reads TABLE at call time)."""
    from stashd.commands import (  # noqa: PLC0415 - families import this module
        connection,
        keys,
        server,
        stash,
        strings,
        transactions,
    )

    for module in (connection, strings, keys, stash, transactions, server):
        _register(module.COMMANDS)


_load()
