"""State every node shares through Redis: the key registry's async lookups and the GCRA limiter.

The registry's synchronous methods run in tests/test_tenancy.py against SQLite, Redis
and a Redis Cluster alike; here are the daemon's asynchronous paths, Redis outages, and
the rate limiter that gives every node one budget on Redis's clock.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator

import pytest
import redis

from stashd.errors import StoreUnavailable
from stashd.ratelimit import Grant, Rate
from stashd.ratelimit_redis import RedisLimiter, rate_key
from stashd.redistarget import RedisTarget
from stashd.registry import RegistryError
from stashd.registry_redis import RedisRegistry
from stashd.tenancy import StrictKeyring, issue_key, new_key
from stashd.tiers import resolve
from tests.support.servers import RedisServer, free_port

TIERS = resolve()


@pytest.fixture
def registry(server: RedisServer) -> Iterator[RedisRegistry]:
    reg = RedisRegistry(RedisTarget.parse(server.url))
    yield reg
    reg.close()


async def test_async_lookups_agree_with_the_synchronous_ones(registry: RedisRegistry) -> None:
    """AUTH's awaited lookup and the revocation poll see what stash keys wrote."""
    keyring = StrictKeyring(registry, TIERS)
    assert keyring.remote
    issued = issue_key(registry, "alice", "pro")
    principal = await keyring.authenticate_async("alice", issued.secret.encode())
    assert principal == keyring.authenticate("alice", issued.secret.encode())
    assert principal is not None
    assert (principal.namespace, principal.limits) == ("user:alice", TIERS["pro"])
    assert await keyring.authenticate_async(None, new_key().encode()) is None
    assert await keyring.authenticate_async(None, b"sk_live_nonsense") is None
    assert await keyring.revoked_async() == set()
    registry.revoke(issued.record.key_id, 10**13)
    assert await keyring.revoked_async() == {issued.record.key_id}
    assert await keyring.authenticate_async(None, issued.secret.encode()) is None
    await keyring.aclose()


async def test_a_registry_redis_that_is_down_is_unavailable_not_wrongpass() -> None:
    """With Redis unreachable AUTH says UNAVAILABLE, and stash keys names Redis and the cause."""
    target = RedisTarget.parse(f"redis://127.0.0.1:{free_port()}/0")
    registry = RedisRegistry(target)
    keyring = StrictKeyring(registry, TIERS)
    with pytest.raises(StoreUnavailable, match="store unavailable: key registry"):
        await keyring.authenticate_async(None, new_key().encode())
    with pytest.raises(RegistryError, match=re.escape(f"Redis at {target.display()}")):
        registry.records()
    with pytest.raises(RegistryError, match="cannot read"):
        await keyring.revoked_async()
    await keyring.aclose()


def test_redis_holds_digests_only(registry: RedisRegistry, server: RedisServer) -> None:
    """No plaintext key is in any key name or value Redis holds."""
    secrets = [issue_key(registry, f"user{i}").secret for i in range(3)]
    raw = redis.Redis(port=server.port, protocol=2)
    dump = b""
    for name in raw.scan_iter():
        dump += bytes(name)
        kind = raw.type(name)
        if kind == b"hash":
            for field, value in raw.hgetall(name).items():
                dump += repr((field, value)).encode()
        elif kind == b"zset":
            dump += repr(raw.zrange(name, 0, -1)).encode()
    raw.close()
    assert dump
    for secret in secrets:
        assert secret.encode() not in dump
        assert secret[8:40].encode() not in dump


@pytest.fixture
def limiter(server: RedisServer) -> RedisLimiter:
    return RedisLimiter(RedisTarget.parse(server.url))


async def test_gcra_allows_the_burst_then_refuses_with_the_wait(limiter: RedisLimiter) -> None:
    """10/s with burst 3: three at once, the fourth refused for about 100 ms, then one more."""
    rate = Rate(10, 1, 3)
    grants = [await limiter.take("alice", rate) for _ in range(4)]
    assert [g.granted for g in grants] == [1, 1, 1, 0]
    assert [g.decision.remaining for g in grants[:3]] == [2, 1, 0]
    refused = grants[3].decision
    assert not refused.allowed
    assert 1 <= refused.retry_after_ms <= 100
    await asyncio.sleep(refused.retry_after_ms / 1000 + 0.02)
    assert (await limiter.take("alice", rate)).granted == 1
    assert (await limiter.take("bob", rate)).granted == 1  # subjects are apart
    await limiter.aclose()


async def test_a_read_is_granted_as_many_commands_as_fit(limiter: RedisLimiter) -> None:
    """Asking about 8 of one unit with burst 5 grants 5 and says when the sixth would fit."""
    grant = await limiter.take("alice", Rate(60, 60, 5), costs=[1] * 8)
    assert grant.granted == 5
    assert not grant.decision.allowed
    assert 900 <= grant.decision.retry_after_ms <= 1000
    assert (await limiter.take("alice", Rate(60, 60, 5), costs=[1, 1])).granted == 0
    await limiter.aclose()


async def test_two_nodes_share_one_budget_on_one_clock(server: RedisServer) -> None:
    """Questions from two limiters (two nodes) in one turn draw on one GCRA state."""
    nodes = [RedisLimiter(RedisTarget.parse(server.url)) for _ in range(2)]
    rate = Rate(1, 60, 10)
    grants = await asyncio.gather(*(nodes[i % 2].take("alice", rate) for i in range(30)))
    assert sum(g.granted for g in grants) == 10
    raw = redis.Redis(port=server.port, protocol=2)
    assert raw.exists(rate_key("alice"))
    assert 0 < raw.pttl(rate_key("alice")) <= 600_000
    raw.close()
    for node in nodes:
        await node.aclose()


async def test_one_turn_of_questions_is_one_round(limiter: RedisLimiter) -> None:
    """Questions asked in one loop turn are all answered, in order, with their own grants."""
    answers: list[tuple[str, Grant]] = []
    rate = Rate(100, 1, 2)

    def answer(subject: str) -> Callable[[Grant], None]:
        return lambda grant: answers.append((subject, grant))

    for subject in ("a", "b", "a", "a", "b"):
        limiter.request(subject, rate, [1], answer(subject))
    while len(answers) < 5:
        await asyncio.sleep(0.01)
    assert [(s, g.granted) for s, g in answers] == [
        ("a", 1),
        ("b", 1),
        ("a", 1),
        ("a", 0),
        ("b", 1),
    ]
    await limiter.aclose()


async def test_without_redis_limits_hold_per_node() -> None:
    """An unreachable Redis makes the limiter fall back to this process's own GCRA."""
    limiter = RedisLimiter(RedisTarget.parse(f"redis://127.0.0.1:{free_port()}/0"))
    rate = Rate(1, 60, 2)
    grants = [await limiter.take("alice", rate) for _ in range(3)]
    assert [g.granted for g in grants] == [1, 1, 0]
    assert grants[2].decision.retry_after_ms > 0
    await limiter.aclose()


async def test_the_limiter_loads_its_script_again(
    limiter: RedisLimiter, server: RedisServer
) -> None:
    """After SCRIPT FLUSH the limiter loads GCRA again instead of falling back."""
    rate = Rate(1, 60, 1)
    assert (await limiter.take("alice", rate)).granted == 1
    raw = redis.Redis(port=server.port, protocol=2)
    raw.script_flush()
    raw.close()
    assert (await limiter.take("alice", rate)).granted == 0
    await limiter.aclose()
