"""The command table against redis-server's own: arity, key positions and flags, per command.

Every command Stash shares with Redis 7.0 reports in COMMAND INFO what Redis reports,
so a client or proxy that reads the table (to route keys, to refuse writes in a
read-only script, to know what blocks) sees the same thing. The few flags that differ
are listed here with why; a new command that differs fails until it is listed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from stashd.commands import TABLE
from tests.support.servers import RedisServer

#: Flags Redis reports and Stash does not, or the other way round, by command, and why.
KNOWN: dict[str, tuple[set[str], set[str], str]] = {
    # (Redis only, Stash only, why)
    **{
        name: (
            {"allow_busy", "noscript"},
            set(),
            "scripts refuse them by name; BUSY is decided by what reaches the store",
        )
        for name in ("auth", "hello", "quit", "reset", "multi", "discard", "watch", "unwatch")
    },
    "exec": ({"noscript", "skip_slowlog"}, set(), "no slowlog; scripts refuse it by name"),
    "ping": (set(), {"stale"}, "answered while the store is unreachable too"),
    "echo": ({"loading"}, set(), "Stash has no loading phase to answer through"),
    "client": (set(), {"loading", "stale"}, "its subcommands are connection settings"),
    "config": (set(), {"loading", "stale"}, "CONFIG GET reads settings, never the store"),
    "script": (set(), {"noscript"}, "the container itself is refused in scripts"),
}


@pytest.fixture(scope="module")
def redis_table() -> Iterator[dict[str, Any]]:
    with RedisServer() as server:
        client = redis.Redis(port=server.port)
        conn = client.connection_pool.get_connection()
        table: dict[str, Any] = {}
        for name in TABLE:
            conn.send_command("COMMAND", "INFO", name)
            (entry,) = conn.read_response()
            if entry is not None:
                table[name.decode()] = entry
        client.connection_pool.release(conn)
        client.close()
        yield table


@pytest.mark.parametrize("name", sorted(n.decode() for n in TABLE))
def test_a_command_redis_has_is_described_as_redis_describes_it(
    name: str, redis_table: dict[str, Any]
) -> None:
    """Arity, first key, last key and step as Redis's; flags too, but where listed above."""
    if name not in redis_table:
        pytest.skip(f"{name} is Stash's own")
    entry = redis_table[name]
    cmd = TABLE[name.encode()]
    assert (cmd.arity, cmd.first_key, cmd.last_key, cmd.key_step) == (
        entry[1],
        entry[3],
        entry[4],
        entry[5],
    )
    theirs = {f.decode() if isinstance(f, bytes) else f for f in entry[2]}
    only_redis, only_stash, _ = KNOWN.get(name, (set(), set(), ""))
    assert theirs - set(cmd.flags) == only_redis
    assert set(cmd.flags) - theirs == only_stash
