"""Stash: working memory for AI agents, JSON that always expires.

Layout
------
``config``     one frozen Config, resolved from flags, env, .env and defaults.
``errors``     error classes carrying their exact wire text.
``resp``       request framing in front of hiredis, and RESP2/RESP3 reply encoding.
``server``     the asyncio protocol serving one RESP connection.
``commands``   the command table: one module per family, parse then build an operation.
``service``    the memory service: namespaces, TTL rules, limits, ids, JSON.
``ops``        atomic operations on one namespace, run by every store.
``batch``      group commit: what all callers asked for in one loop turn, as one batch.
``store``      where entries live: SQLite (the default, durable) or memory.
``tenancy``    who a connection is: namespace and limits of an API key.
``app``        runs the daemon: store, RESP server, shutdown.
``cli``        the ``stashd`` and ``stash`` commands.
"""

__version__ = "0.1.0"
