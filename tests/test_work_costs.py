"""Rate limits that count work: what requests cost, debts, and the connection commands' budget.

First the rule itself (stashd.cost), the limiter's over-burst and debt rules and the
connection budget, on injected clocks; then a real strict daemon whose tiers make every
unit visible: ``free`` (1/min, burst 10) shows refusals and their waits in whole minutes,
``pro`` (1/min, burst 100,000) shows exact units spent in the RateLimit header of a
one-entry listing (which costs one unit itself). A minute per unit means no unit comes
back while a test runs. Then the shared limiter on a real redis-server.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from stashd.commands import TABLE
from stashd.connbudget import PER_ADDRESS, PER_CONNECTION, ConnectionBudget
from stashd.cost import BYTES_PER_UNIT, command_cost, op_debt, units
from stashd.ratelimit import LocalLimiter, Rate
from stashd.ratelimit_redis import RedisLimiter
from stashd.redistarget import RedisTarget
from stashd.registry import SQLiteRegistry
from stashd.service import MemoryService
from stashd.store.memory import MemoryStore
from stashd.tenancy import issue_key
from stashd.types import Limits, Principal
from tests.support.clock import Clock
from tests.support.resp_client import Reply, RespClient
from tests.support.servers import RedisServer, StashDaemon

MINUTE_MS = 60_000


def _request(*args: str | bytes) -> bytes:
    parts = [a if isinstance(a, bytes) else a.encode() for a in args]
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%b\r\n" % (len(p), p) for p in parts)


def _retry_ms(reply: Reply) -> int:
    match = re.fullmatch(r"-RATELIMIT rate limit exceeded, retry after (\d+) ms", reply.render())
    assert match, reply.render()
    return int(match.group(1))


# -- the rule -------------------------------------------------------------------------------


@given(
    keys=st.lists(st.integers(0, 100_000), min_size=2, max_size=2),
    sizes=st.lists(st.integers(0, 10**9), min_size=2, max_size=2),
    walked=st.integers(0, 10**7),
)
def test_cost_grows_with_keys_and_bytes_and_is_never_below_one(
    keys: list[int], sizes: list[int], walked: int
) -> None:
    """More keys or more bytes never cost less, and nothing costs less than one unit."""
    (k1, k2), (b1, b2) = sorted(keys), sorted(sizes)
    assert 1 <= units(k1, b1, walked) <= units(k2, b1, walked) <= units(k2, b2, walked)
    assert units(k1, b1) <= units(k1, b1, walked)


@settings(max_examples=200)
@given(
    name=st.sampled_from(sorted(TABLE)),
    args=st.lists(st.binary(max_size=3 * BYTES_PER_UNIT // 2), max_size=6),
    extra=st.binary(max_size=BYTES_PER_UNIT),
)
def test_a_request_costs_at_least_one_and_more_with_another_argument(
    name: bytes, args: list[bytes], extra: bytes
) -> None:
    """Whatever a request holds, it costs a unit or more, and one more argument never costs less."""
    cmd = TABLE[name]
    request = [name, *args]
    assert 1 <= command_cost(cmd, request) <= command_cost(cmd, [*request, extra])


@pytest.mark.parametrize(
    ("args", "cost"),
    [
        ([b"GET", b"k"], 1),
        ([b"SET", b"k", b"v" * (BYTES_PER_UNIT - 4)], 1),  # 16 KiB of request in all
        ([b"SET", b"k", b"v" * (BYTES_PER_UNIT - 3)], 2),
        ([b"SET", b"k", b"v" * (3 * BYTES_PER_UNIT)], 4),
        ([b"MSET", *[b"k%d" % i for i in range(40)]], 20),  # per pair
        ([b"MGET", *[b"k%d" % i for i in range(7)]], 7),  # per key
        ([b"DEL", b"a", b"b", b"c"], 3),
        ([b"EXISTS", b"a", b"a"], 2),
        ([b"RENAME", b"a", b"b"], 2),
        ([b"SCAN", b"0", b"COUNT", b"1000"], 1),  # walks are charged once walked
        ([b"NOSUCHCOMMAND", b"x"], 1),
    ],
)
def test_request_costs_by_key_and_byte(args: list[bytes], cost: int) -> None:
    """Keys by the command table's key positions, bytes past the first 16 KiB per 16 KiB."""
    assert command_cost(TABLE.get(args[0].lower()), args) == cost


def test_ops_report_what_running_them_read_merged_and_walked() -> None:
    """A merge counts the document read and the one written; GET the value; walks the entries."""
    store = MemoryStore()
    service = MemoryService(store)
    p = Principal(
        "ns", Limits(max_payload=4 * 1024 * 1024, default_ttl_ms=60_000, max_ttl_ms=60_000)
    )
    doc = json.dumps({"notes": "x" * 500_000}).encode()
    store.run(service.set(p, b"doc", doc))
    merge = service.update(p, b"doc", data=None, merge=b'{"step":1}', extend_seconds=0)
    store.run(merge)
    # 500,013 bytes read, 500,022 written: 1,000,035 bytes are 61 units past the first.
    assert op_debt(merge, None) == 61
    get = service.get(p, b"doc")
    assert op_debt(get, store.run(get)) == 30  # 500,022 bytes read back
    store.run(service.set_many(p, [(b"k%d" % i, b"v") for i in range(350)]))
    scan = service.scan(p, 0, 1000, b"nothing*")
    store.run(scan)
    assert op_debt(scan, None) == 3  # 351 entries walked, whatever matched
    count = service.count(p)
    assert op_debt(count, store.run(count)) == 3


# -- the limiter ----------------------------------------------------------------------------


def test_a_cost_over_the_burst_runs_on_a_full_burst_and_leaves_a_debt() -> None:
    """Burst 10 at one a second: 20 units go at once from full, then the next waits 11 s."""
    clock = Clock(1_000_000)
    limiter = LocalLimiter(clock)
    rate = Rate(1, 1, 10)
    assert limiter.acquire("a", rate).allowed
    refused = limiter.acquire("a", rate, 20)  # one unit short of the whole burst
    assert not refused.allowed
    assert refused.retry_after_ms == 1000
    clock.now += 1000
    assert limiter.acquire("a", rate, 20).allowed
    assert limiter.wait_ms("a", rate) == 11_000
    clock.now += 11_000
    assert limiter.wait_ms("a", rate) == 0


def test_a_debt_refuses_nothing_and_delays_what_comes_after() -> None:
    """charge() moves the TAT on by the work done; the next request waits exactly that long."""
    clock = Clock(1_000_000)
    limiter = LocalLimiter(clock)
    rate = Rate(1, 1, 10)
    limiter.charge("a", rate, 25)
    limiter.charge("a", rate, 5)  # debts add up; none is refused
    decision = limiter.acquire("a", rate)
    assert not decision.allowed
    assert decision.retry_after_ms == 21_000  # 30 s of debt, less the 10 s of burst, plus one
    assert limiter.acquire("b", rate).allowed


def test_the_connection_budget_is_per_connection_and_per_address() -> None:
    """50 at once on a connection, then ten a second; 1000 a minute across one address."""
    clock = Clock(1_000_000)
    budget = ConnectionBudget(clock=clock)
    tat = 0.0
    for _ in range(PER_CONNECTION.burst):
        wait, tat = budget.admit(tat, "10.0.0.1", 1)
        assert wait == 0
    wait, refused_tat = budget.admit(tat, "10.0.0.1", 1)
    assert (wait, refused_tat) == (100, tat)  # refused, and not counted
    clock.now += 100
    assert budget.admit(tat, "10.0.0.1", 1)[0] == 0
    # New connections from one address: each has its own TAT, the address only one.
    admitted = sum(budget.admit(0.0, "10.0.0.2", 1)[0] == 0 for _ in range(PER_ADDRESS.burst + 5))
    assert admitted == PER_ADDRESS.burst
    assert budget.admit(0.0, "10.0.0.3", 1)[0] == 0  # another address is apart


def test_without_an_address_budget_only_each_connection_is_held() -> None:
    """A loopback daemon's budget: new connections from one address are never held back."""
    budget = ConnectionBudget(per_address=None, clock=Clock(1_000_000))
    admitted = sum(budget.admit(0.0, "127.0.0.1", 1)[0] == 0 for _ in range(PER_ADDRESS.burst * 2))
    assert admitted == PER_ADDRESS.burst * 2
    tat = 0.0
    for _ in range(PER_CONNECTION.burst):
        tat = budget.admit(tat, "127.0.0.1", 1)[1]
    assert budget.admit(tat, "127.0.0.1", 1)[0] == 100  # one connection still has its own


def test_a_loopback_daemon_lets_an_app_reconnect_for_every_request() -> None:
    """On the default loopback address, 300 redis-py connections in a row all handshake."""
    with StashDaemon("--backend", "memory", "--no-http") as d:
        for i in range(300):
            r = redis.Redis(port=d.port, protocol=3)
            assert r.ping(), i
            r.close()


# -- a real daemon --------------------------------------------------------------------------

TIERS = """
[free]
rate = "1/min"
burst = 10
[pro]
rate = "1/min"
burst = 100000
"""


class Daemon:
    """A strict daemon with the module's tiers and a registry to make keys in."""

    def __init__(self, daemon: StashDaemon, db: Path) -> None:
        self.daemon = daemon
        self.db = db
        self.port = daemon.port

    def key(self, tier: str) -> str:
        """A key of a new user (so a namespace and a budget of its own) on ``tier``."""
        registry = SQLiteRegistry(self.db)
        try:
            return issue_key(registry, f"u{uuid.uuid4().hex[:12]}", tier).secret
        finally:
            registry.close()

    def client(self, secret: str, source: str | None = None) -> RespClient:
        """A raw connection, authenticated."""
        c = RespClient(self.port, source=source)
        assert c.call("AUTH", secret).render() == "+OK"
        return c

    def units_left(self, secret: str) -> int:
        """The units the key's user has left, after this request's own one."""
        request = urllib.request.Request(  # noqa: S310 - the test's own daemon
            f"{self.daemon.http_url}/stash?limit=1", headers={"X-API-KEY": secret}
        )
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            field = response.headers["RateLimit"]
        match = re.fullmatch(r'"default";r=(\d+);t=\d+', field)
        assert match, field
        return int(match.group(1))


@pytest.fixture(scope="module")
def stash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One strict daemon (memory store) for the module; each test makes its own users."""
    root = tmp_path_factory.mktemp("costs")
    db = root / "stash.db"
    SQLiteRegistry(db).close()
    tiers = root / "tiers.toml"
    tiers.write_text(TIERS)
    args = ("--auth", "keys", "--db", str(db), "--backend", "memory", "--tiers", str(tiers))
    # Listening beyond loopback, as a shared deployment does: the per-address budget
    # applies (each test's client takes a loopback address of its own as its source).
    with StashDaemon(*args, "--host", "0.0.0.0") as daemon:  # noqa: S104 - strict mode
        yield Daemon(daemon, db)


def test_mset_of_20_keys_runs_on_a_full_burst_and_costs_20(stash: Daemon) -> None:
    """Free (burst 10): MSET of 20 keys runs, then every command waits 11 units for it."""
    c = stash.client(stash.key("free"))
    started = time.monotonic()
    pairs = [x for i in range(20) for x in (f"k{i}", "v")]
    assert c.call("MSET", *pairs).render() == "+OK"
    wait = _retry_ms(c.call("GET", "k0"))
    elapsed_ms = (time.monotonic() - started) * 1000
    assert 11 * MINUTE_MS - elapsed_ms - 1 <= wait <= 11 * MINUTE_MS  # 20 - 10 + 1 units
    assert _retry_ms(c.call("GET", "k0")) <= wait  # the refused GET was not counted


@pytest.mark.parametrize(
    ("args", "cost"),
    [
        (("MGET", *[f"k{i}" for i in range(37)]), 37),
        (("MSET", *[x for i in range(25) for x in (f"k{i}", "v")]), 25),
        (("DEL", "a", "b", "c", "d", "e"), 5),
        (("SET", "big", "v" * (200 * 1024)), 13),
        (("PING",), 1),
    ],
)
def test_each_request_costs_by_its_keys_and_bytes(
    stash: Daemon, args: tuple[str, ...], cost: int
) -> None:
    """What a command costs is what the RateLimit header's remaining units drop by."""
    secret = stash.key("pro")
    c = stash.client(secret)
    before = stash.units_left(secret)
    assert not c.call(*args).render().startswith("-")
    assert before - stash.units_left(secret) == cost + 1


def test_walks_cost_the_entries_they_walked(stash: Daemon) -> None:
    """KEYS over 3,000 keys costs 30 whatever it matches; DBSIZE, SCAN and FLUSHDB by theirs."""
    secret = stash.key("pro")
    c = stash.client(secret)
    assert c.call("MSET", *[x for i in range(3000) for x in (f"key:{i}", "v")]).render() == "+OK"
    before = stash.units_left(secret)
    assert c.call("KEYS", "nothing:*").render() == "[]"
    after_keys = stash.units_left(secret)
    assert before - after_keys == 1 + 29 + 1  # the command, 29 units past the first 100
    assert c.call("DBSIZE").render() == ":3000"
    assert after_keys - stash.units_left(secret) == 1 + 29 + 1
    before = stash.units_left(secret)
    assert c.call("SCAN", "0", "COUNT", "5000").kind == "*"  # examines 1,000 at most
    after_scan = stash.units_left(secret)
    assert before - after_scan == 1 + 9 + 1
    assert c.call("FLUSHDB").render() == "+OK"
    assert after_scan - stash.units_left(secret) == 1 + 29 + 1  # by the keys it freed


def test_a_merge_on_a_big_document_leaves_a_debt_that_refuses_the_next_command(
    stash: Daemon,
) -> None:
    """Free: a 100 KB document (7 units), a small MERGE (1, then 12 of debt): the next waits."""
    c = stash.client(stash.key("free"))
    doc = json.dumps({"notes": "x" * 100_000})
    started = time.monotonic()
    memory_id = c.call("STASH", doc).value
    assert memory_id is not None
    assert c.call("UPDATE", memory_id, "MERGE", '{"step":1}').kind == ":"
    wait = _retry_ms(c.call("RECALL", memory_id))
    elapsed_ms = (time.monotonic() - started) * 1000
    # 7 + 1 + 12 = 20 units spent of a burst of 10: one more fits after 11 minutes.
    assert 11 * MINUTE_MS - elapsed_ms - 1 <= wait <= 11 * MINUTE_MS


def test_a_transaction_costs_what_its_commands_cost(stash: Daemon) -> None:
    """MULTI, 5 queued SETs and EXEC cost 5; on free, MULTI + MSET of 20 + EXEC runs too."""
    secret = stash.key("pro")
    c = stash.client(secret)
    before = stash.units_left(secret)
    c.send_raw(_request("MULTI") + _request("SET", "t", "1") * 5 + _request("EXEC"))
    assert [c.read().render() for _ in range(7)][-1] == "[+OK, +OK, +OK, +OK, +OK]"
    assert before - stash.units_left(secret) == 5 + 1
    free = stash.client(stash.key("free"))
    pairs = [x for i in range(20) for x in (f"k{i}", "v")]
    free.send_raw(_request("MULTI") + _request("MSET", *pairs) + _request("EXEC"))
    assert [free.read().render() for _ in range(3)] == ["+OK", "+QUEUED", "[+OK]"]
    assert _retry_ms(free.call("EXEC")) > 10 * MINUTE_MS  # EXEC without MULTI costs one


def test_auth_past_the_connection_budget_is_refused(stash: Daemon) -> None:
    """51 AUTHs on one connection: 50 pass, the 51st waits a tenth of a second, unchecked."""
    secret = stash.key("pro")
    c = RespClient(stash.port, source="127.0.0.21")
    burst = PER_CONNECTION.burst
    # HELLO and CLIENT share the budget; QUIT never waits.
    c.send_raw(
        _request("AUTH", secret) * (burst + 1)
        + _request("HELLO", "3")
        + _request("CLIENT", "ID")
        + _request("QUIT")
    )
    replies = [c.read() for _ in range(burst + 4)]
    assert [r.render() for r in replies[:burst]] == ["+OK"] * burst
    assert all(1 <= _retry_ms(r) <= 100 for r in replies[burst : burst + 3])
    assert replies[-1].render() == "+OK"


def test_many_connections_from_one_address_share_its_budget(stash: Daemon) -> None:
    """26 connections of 40 AUTHs from one address: 1,000 pass, then RATELIMIT."""
    secret = stash.key("pro")
    started = time.monotonic()
    passed = refused = 0
    for _ in range(26):
        c = RespClient(stash.port, source="127.0.0.22")
        c.send_raw(_request("AUTH", secret) * 40)
        replies = [c.read().render() for _ in range(40)]
        passed += replies.count("+OK")
        refused += sum(r.startswith("-RATELIMIT") for r in replies)
        c.close()
    refilled = int((time.monotonic() - started) * PER_ADDRESS.limit / PER_ADDRESS.period_s) + 1
    assert PER_ADDRESS.burst <= passed <= PER_ADDRESS.burst + refilled
    assert passed + refused == 26 * 40
    other = RespClient(stash.port, source="127.0.0.23")  # another address is not held back
    assert other.call("AUTH", secret).render() == "+OK"


def test_redis_py_connecting_and_reconnecting_is_never_refused(stash: Daemon) -> None:
    """Twenty connections through redis-py's handshake: none refused, no data units spent."""
    secret = stash.key("pro")
    before = stash.units_left(secret)
    for _ in range(20):
        with redis.Redis(port=stash.port, password=secret) as r:
            assert r.client_info()["name"] == ""  # HELLO 3 AUTH and CLIENT SETINFO went first
            assert r.get("missing") is None
            r.connection_pool.disconnect()
            assert r.get("missing") is None  # a reconnect: the handshake again
    assert before - stash.units_left(secret) == 40 + 1  # the GETs alone


def test_a_spent_data_budget_leaves_auth_and_hello_alone(stash: Daemon) -> None:
    """Over its data rate a client still authenticates, says HELLO and connects with redis-py."""
    secret = stash.key("free")
    c = stash.client(secret)
    c.send_raw(_request("GET", "k") * 11)
    assert _retry_ms([c.read() for _ in range(11)][-1]) > 0
    assert c.call("AUTH", secret).render() == "+OK"
    assert c.call("HELLO", "3").kind == "%"
    assert c.call("CLIENT", "SETNAME", "over-budget").render() == "+OK"
    with (
        redis.Redis(port=stash.port, password=secret) as r,
        pytest.raises(redis.ResponseError, match="RATELIMIT"),
    ):
        r.get("k")


def test_a_spent_connection_budget_leaves_the_data_budget_alone(stash: Daemon) -> None:
    """60 AUTHs (10 refused) on one connection; the free user's ten data units are all there."""
    secret = stash.key("free")
    c = RespClient(stash.port, source="127.0.0.24")
    c.send_raw(_request("AUTH", secret) * 60)
    replies = [c.read().render() for _ in range(60)]
    assert replies[:50] == ["+OK"] * 50
    assert replies[-1].startswith("-RATELIMIT")  # ten a second: a second would have to pass
    c.send_raw(_request("GET", "k") * 11)
    replies = [c.read().render() for _ in range(11)]
    assert replies[:10] == ["(nil)"] * 10
    assert replies[10].startswith("-RATELIMIT")


def test_http_costs_by_body_and_by_what_it_read(stash: Daemon) -> None:
    """POST /stash of 200 KB costs 13; recalling it 1 + 12 of debt; the header says what is left."""
    secret = stash.key("pro")
    body = json.dumps({"data": {"notes": "x" * 200_000}}).encode()
    before = stash.units_left(secret)
    request = urllib.request.Request(  # noqa: S310 - the test's own daemon
        f"{stash.daemon.http_url}/stash", data=body, method="POST", headers={"X-API-KEY": secret}
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
        memory_id = json.loads(response.read())["memory_id"]
        remaining = int(re.findall(r"r=(\d+)", response.headers["RateLimit"])[0])
    assert before - remaining == 13  # 200,034 bytes: 12 units past the first
    recall = urllib.request.Request(  # noqa: S310
        f"{stash.daemon.http_url}/recall/{memory_id}", headers={"X-API-KEY": secret}
    )
    with urllib.request.urlopen(recall, timeout=5) as response:  # noqa: S310
        response.read()
    assert remaining - stash.units_left(secret) == 1 + 12 + 1


# -- the shared limiter -----------------------------------------------------------------------


@pytest.fixture
def limiter(redis_store: RedisServer) -> RedisLimiter:
    redis_store.flush()
    return RedisLimiter(RedisTarget.parse(redis_store.url))


async def test_the_shared_limiter_applies_costs_and_debts(limiter: RedisLimiter) -> None:
    """On Redis's clock: costs in order, a cost over the burst on a full one, debts that delay."""
    rate = Rate(1, 60, 10)
    grant = await limiter.take("alice", rate, costs=[3, 5, 4])
    assert grant.granted == 2  # 3 + 5 fit in 10; the third needs 4 of the 2 left
    assert 2 * MINUTE_MS - 1000 < grant.decision.retry_after_ms <= 2 * MINUTE_MS
    assert (await limiter.take("bob", rate, costs=[20])).granted == 1  # full: runs
    bob = (await limiter.take("bob", rate)).decision
    assert 10 * MINUTE_MS < bob.retry_after_ms <= 11 * MINUTE_MS
    limiter.charge("carol", rate, 12)  # a debt: nothing to wait for, it goes out with the next
    carol = await limiter.take("carol", rate)
    assert carol.granted == 0
    assert 2 * MINUTE_MS < carol.decision.retry_after_ms <= 3 * MINUTE_MS
    await limiter.aclose()


def test_a_daemon_on_the_shared_limiter_charges_costs_and_debts(redis_store: RedisServer) -> None:
    """--backend redis, 1/min with a burst of 1,000: 500 + KEYS (1, and 4 of debt) + 495 fill it."""
    redis_store.flush()
    env = {"STASH_RATE_LIMIT": "1/min", "STASH_RATE_BURST": "1000"}
    with StashDaemon("--backend", "redis", "--redis-url", redis_store.url, env=env) as d:
        c = RespClient(d.port)
        assert c.call("AUTH", "shared-cost-key").render() == "+OK"
        assert c.call("MSET", *[x for i in range(500) for x in (f"k{i}", "v")]).render() == "+OK"
        assert len(c.call("KEYS", "*").value) == 500
        assert c.call("MGET", *[f"k{i}" for i in range(495)]).kind == "*"
        # Without the walk's debt 4 units would be left; with it, the burst is spent.
        assert 59_000 < _retry_ms(c.call("GET", "k0")) <= MINUTE_MS
        c.close()
