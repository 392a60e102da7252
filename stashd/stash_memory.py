"""``stash_memory``: this project under its distribution's name, as an earlier README wrote it.

The wheel installs this file as the top-level module ``stash_memory``, so
``from stash_memory import Stash`` gives the very objects ``from stashd import Stash``
does; inside the package it is only this alias.
"""

from stashd import AsyncStash, Stash, StashError

__all__ = ["AsyncStash", "Stash", "StashError"]
