"""How a ``stash`` or ``stashd`` command ends on an error: one line on stderr, an exit code."""

from __future__ import annotations

import sys
from typing import Final, NoReturn

import click

#: click's own code for bad usage; also arguments and requests refused as such.
USAGE: Final = 2
#: The store cannot be reached or opened: a ``stash`` command's StoreUnavailable, and a
#: daemon whose ``--db`` file, key registry or Redis cannot be opened at start.
STORE_UNAVAILABLE: Final = 10
#: The daemon cannot listen on its RESP or HTTP port (most often: it is in use); past
#: the ``stash`` command's codes (0-10), so a script can tell it from every other failure.
CANNOT_LISTEN: Final = 11


def fail(message: str, code: int = 1, *, program: str = "stash") -> NoReturn:
    """Print ``program: message`` on stderr and exit with ``code``."""
    click.echo(f"{program}: {message}", err=True)
    sys.exit(code)
