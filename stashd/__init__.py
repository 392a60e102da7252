"""Stash: working memory for AI agents, JSON that always expires.

Use it in-process or against a running stashd, with one API::

    from stashd import Stash

    stash = Stash()  # embedded: SQLite in this process, no daemon
    stash.set("plan", {"step": 1}, ttl=600)

Layout
------
The doors, each a thin translation onto the memory service:

``server``       the RESP door: one asyncio protocol per connection, dispatching requests.
``commands``     the command table: one module per family, parse then build an operation.
``resp``         request framing in front of hiredis, and RESP2/RESP3 reply encoding.
``http``         the HTTP door: the JSON API on the same service, store and batcher.
``mcp``          the MCP door: tools and resources for agents, over stdio and at /mcp.
``client``       the Python API: Stash and AsyncStash, embedded or remote.
``clientmode``   where a client's data is: a store in this process, or a stashd.
``embedded``     the client's in-process door: service operations run by a local store.
``remote``       the client's remote door: RESP commands over redis-py, errors read back.
``cli``          the ``stashd`` and ``stash`` commands: entry points and serve options
                 (``cli_data``: the data commands; ``cli_keys``: keys and tiers;
                 ``cli_mcp``: the MCP server on stdio; ``cli_exit``: how a command fails).

The rules, each in one place:

``service``      the memory service: namespaces, TTL rules, limits, ids, JSON.
``ops``          atomic operations on one namespace, run by every store.
``quota``        storage quotas: what a namespace holds, and the one check.
``held``         memory held for clients (MULTI queues) and ``--maxmemory``.
``cost``         what a request costs in rate-limit units.
``ratelimit``    the GCRA rate limiter behind a small interface (``ratelimit_redis``: in Redis).
``connbudget``   the connection commands' own budget, per connection and address.
``admission``    one count of client connections over every door (``--max-clients``).
``tenancy``      who a connection is: API keys, namespaces, limits, the failed-AUTH throttle.
``ids``          ids of new memories, each namespace's own.
``jsontext``     JSON text as Stash reads and writes it (``jsonmerge``: RFC 7396 merges).
``glob``         Redis glob patterns, matched in linear time.
``errors``       error classes carrying their exact wire text, and the parser back.

Where entries live, and the rest:

``store``        memory, SQLite (the default, durable) and Redis stores behind one View.
``batch``        group commit: what all callers asked for in one loop turn, as one batch;
                 where it runs at once instead; write events noted (``events``).
``registry``     the API key registry (users, tiers, key digests); ``registry_redis`` in Redis.
``redislink``    links to Redis or Valkey: rounds of commands, scripts, link errors.
``redistarget``  where Redis is and how to reach it: the settings a Redis URL gives.
``config``       one frozen Config from flags, env, .env and defaults (``tiers``: the tier
                 table; ``sizes``: sizes as Redis writes them; ``outputlimit``: output
                 buffer limits).
``listener``     a door's listening sockets, admitting each connection before it exists.
``app``          runs the daemon: store, RESP server, HTTP door, shutdown.
``log``          structlog setup.
``types``        the leaf: Entry, View, Clock, Limits, Quota, Principal; imports nothing of Stash.
"""

from stashd._version import __version__
from stashd.client import AsyncStash, Memory, MemoryInfo, MemoryPage, Stash
from stashd.errors import (
    AuthenticationError,
    Conflict,
    InvalidTTL,
    LeaseHeld,
    LeaseLost,
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
    "LeaseHeld",
    "LeaseLost",
    "Memory",
    "MemoryInfo",
    "MemoryPage",
    "NotJSON",
    "PayloadTooLarge",
    "RateLimited",
    "Stash",
    "StashError",
    "StoreUnavailable",
    "__version__",
]
