"""The Redis store's Lua scripts, read from ``scripts/*.lua`` and named for EVALSHA.

Each script is the index's functions (``scripts/index.lua``, see
:mod:`stashd.store.redis.layout`) followed by its own file, after one line that gives
the Lua the Python constants it shares, so a number is written once, here. A
:class:`~stashd.redislink.Script` knows its SHA-1 without asking Redis; the links load
:data:`SCRIPTS` when they connect and again when Redis answers NOSCRIPT
(:func:`~stashd.redislink.is_noscript`).
"""

from __future__ import annotations

from importlib import resources
from typing import Final

from stashd.redislink import Script
from stashd.store.redis.layout import CLEAN_PER_CALL

#: The folder the scripts ship in (package data of the wheel).
FOLDER: Final = resources.files(__package__ or "stashd.store.redis").joinpath("scripts")
#: What every script sees first: the constants it shares with Python.
CONSTANTS: Final = f"local CLEAN_PER_CALL = {CLEAN_PER_CALL}\n"


def read(name: str) -> str:
    """The text of ``scripts/<name>.lua``."""
    return FOLDER.joinpath(f"{name}.lua").read_text(encoding="utf-8")


def load(name: str) -> Script:
    """The script ``name``, with the shared constants and the index's functions before it."""
    return Script(CONSTANTS + read("index") + read(name))


#: Check, then write: the commit of every operation (see :mod:`stashd.store.redis.plan`).
APPLY: Final = load("apply")
#: A namespace's usage, after forgetting expired keys.
USAGE: Final = load("usage")
#: A page of a namespace's key order.
PAGE: Final = load("page")
#: FLUSHDB, a page at a time.
DROP: Final = load("drop")
#: Indexing entries from before the index.
ADOPT: Final = load("adopt")
#: Every script the store runs, loaded when a connection is made.
SCRIPTS: Final = (APPLY, USAGE, PAGE, DROP, ADOPT)
