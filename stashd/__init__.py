"""Stash: working memory for AI agents, JSON that always expires.

Use it in-process or against a running stashd, with one API::

    from stashd import Stash

    stash = Stash()  # embedded: SQLite in this process, no daemon
    stash.set("plan", {"step": 1}, ttl=600)

Layout
------
``client``     the Python API: Stash and AsyncStash, embedded or remote.
``embedded``   the client's in-process door: service operations run by a local store.
``remote``     the client's remote door: RESP commands over redis-py, errors read back.
``config``     one frozen Config, resolved from flags, env, .env and defaults.
``errors``     error classes carrying their exact wire text, and the parser back.
``resp``       request framing in front of hiredis, and RESP2/RESP3 reply encoding.
``server``     the asyncio protocol serving one RESP connection.
``commands``   the command table: one module per family, parse then build an operation.
``http``       the HTTP sidecar: the JSON API on the same service, store and batcher.
``service``    the memory service: namespaces, TTL rules, limits, ids, JSON.
``ops``        atomic operations on one namespace, run by every store.
``batch``      group commit: what all callers asked for in one loop turn, as one batch.
``store``      where entries live: SQLite (the default, durable) or memory.
``tenancy``    who a connection is: API keys, namespaces, limits, the failed-AUTH throttle.
``registry``   the API key registry (users, tiers, key digests) in the SQLite file.
``tiers``      the tier table: defaults, overrides from a TOML file and env.
``ratelimit``  the GCRA rate limiter behind a small interface.
``app``        runs the daemon: store, RESP server, HTTP sidecar, shutdown.
``cli``        the ``stashd`` and ``stash`` commands.
"""

from stashd._version import __version__
from stashd.client import AsyncStash, Memory, Stash
from stashd.errors import (
    AuthenticationError,
    Conflict,
    InvalidTTL,
    NotJSON,
    PayloadTooLarge,
    RateLimited,
    StashError,
    StoreUnavailable,
)

__all__ = [
    "AsyncStash",
    "AuthenticationError",
    "Conflict",
    "InvalidTTL",
    "Memory",
    "NotJSON",
    "PayloadTooLarge",
    "RateLimited",
    "Stash",
    "StashError",
    "StoreUnavailable",
    "__version__",
]
