"""LangGraph on Stash: a checkpointer and a store whose data always expires.

``pip install "stash-memory[langgraph]"``, then::

    from stashd import Stash
    from stashd.langgraph import StashSaver, StashStore

:mod:`stashd.langgraph.saver` holds the checkpointers (``StashSaver`` on a ``Stash``,
``AsyncStashSaver`` on an ``AsyncStash``), :mod:`stashd.langgraph.store` the stores
(``StashStore``, ``AsyncStashStore``), :mod:`stashd.langgraph.keys` how LangGraph's
names become Stash keys.
"""

from stashd.langgraph.saver import AsyncStashSaver, StashSaver
from stashd.langgraph.store import AsyncStashStore, StashStore

__all__ = ["AsyncStashSaver", "AsyncStashStore", "StashSaver", "StashStore"]
