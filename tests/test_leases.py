"""Leases on every backend: one owner at a time, fencing tokens that only grow, owners checked."""

from __future__ import annotations

import json
import random
import threading
import urllib.error
import urllib.request
import uuid
from typing import TYPE_CHECKING, Final

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from stashd import AsyncStash, Stash
from stashd.errors import InvalidRequest, LeaseHeld, TTLNotPositive, WrongType
from stashd.ops import TOKENS_PER_MS
from stashd.types import Kind, Quota
from tests.support.backends import open_backend
from tests.support.clock import Clock as ManualClock
from tests.support.door import MAX_TTL_MS, T0, Door
from tests.support.servers import RedisServer, StashDaemon, redis_nodes

if TYPE_CHECKING:
    from tests.support.backends import Backend
    from tests.support.clock import Clock


def _clock(backend: Backend) -> Clock:
    clock = backend.store.clock
    assert hasattr(clock, "now")
    return clock  # type: ignore[return-value]


def test_a_claim_takes_a_free_key_and_refuses_while_held(backend: Backend) -> None:
    """The first claim gets a token; any other claim, the owner's too, gets nil while held."""
    door = Door(backend)
    token = door.call(b"LEASE", b"CLAIM", b"task:1", b"w1", b"30")
    assert token == T0 * TOKENS_PER_MS
    assert door.call(b"LEASE", b"CLAIM", b"task:1", b"w2", b"30") is None
    assert door.call(b"LEASE", b"CLAIM", b"task:1", b"w1", b"30") is None
    assert door.call(b"TYPE", b"task:1") == "lease"
    assert door.entries()[b"task:1"][3] == Kind.LEASE
    info = door.call(b"LEASE", b"INFO", b"task:1")
    assert info == {b"owner": b"w1", b"token": token, b"pttl": 30_000}


def test_tokens_grow_across_release_and_claim(backend: Backend) -> None:
    """A claim right after a release, in the same millisecond, gets a larger token."""
    door = Door(backend)
    tokens = []
    for _ in range(5):
        token = door.call(b"LEASE", b"CLAIM", b"k", b"w", b"10")
        assert isinstance(token, int)
        tokens.append(token)
        assert door.call(b"LEASE", b"RELEASE", b"k", b"w", str(token).encode()) == 1
    assert tokens == sorted(set(tokens))
    assert door.call(b"LEASE", b"INFO", b"k") is None  # released: no one holds it
    assert door.call(b"TYPE", b"k") == "lease"  # the entry keeps the token


def test_tokens_grow_across_expiry_and_claim(backend: Backend) -> None:
    """Once a lease expired its entry is gone, and the next claim's token is still larger."""
    door = Door(backend)
    clock = _clock(backend)
    first = door.call(b"LEASE", b"CLAIM", b"k", b"w1", b"1")
    # Claims and releases in one millisecond push the token ahead of the clock.
    for _ in range(3):
        assert door.call(b"LEASE", b"RELEASE", b"k", b"w1", str(first).encode()) == 1
        first = door.call(b"LEASE", b"CLAIM", b"k", b"w1", b"1")
    clock.now += 1000
    assert door.call(b"LEASE", b"INFO", b"k") is None
    second = door.call(b"LEASE", b"CLAIM", b"k", b"w2", b"1")
    assert second > first
    assert door.call(b"LEASE", b"RENEW", b"k", b"w1", str(first).encode(), b"5") == 0
    assert door.call(b"LEASE", b"RELEASE", b"k", b"w1", str(first).encode()) == 0


def test_renew_and_release_by_another_owner_or_token_are_refused(backend: Backend) -> None:
    """Only the owner, with its token, renews or releases; a refusal changes nothing."""
    door = Door(backend)
    clock = _clock(backend)
    token = door.call(b"LEASE", b"CLAIM", b"k", b"w1", b"10")
    before = door.entries()
    other = str(token + 1).encode()
    assert door.call(b"LEASE", b"RENEW", b"k", b"w2", str(token).encode(), b"20") == 0
    assert door.call(b"LEASE", b"RENEW", b"k", b"w1", other, b"20") == 0
    assert door.call(b"LEASE", b"RELEASE", b"k", b"w2", str(token).encode()) == 0
    assert door.call(b"LEASE", b"RELEASE", b"k", b"w1", other) == 0
    assert door.entries() == before
    clock.now += 5000
    assert door.call(b"LEASE", b"RENEW", b"k", b"w1", str(token).encode(), b"20") == 1
    assert door.call(b"LEASE", b"INFO", b"k")[b"pttl"] == 20_000
    assert door.call(b"LEASE", b"RELEASE", b"k", b"w1", str(token).encode()) == 1
    assert door.call(b"LEASE", b"RENEW", b"k", b"w1", str(token).encode(), b"20") == 0
    assert door.call(b"LEASE", b"RELEASE", b"k", b"w1", str(token).encode()) == 0


def test_bad_input_names_the_limit_and_changes_nothing(backend: Backend) -> None:
    """A TTL outside 1..max, an empty or long owner, a key of another kind: refused."""
    door = Door(backend)
    door.call(b"SET", b"s", b"v")
    before = door.entries()
    over = str(MAX_TTL_MS // 1000 + 1).encode()
    refused = door.call(b"LEASE", b"CLAIM", b"k", b"w", over)
    assert "3600" in str(refused)
    assert isinstance(door.call(b"LEASE", b"CLAIM", b"k", b"w", b"0"), TTLNotPositive)
    empty = door.call(b"LEASE", b"CLAIM", b"k", b"", b"5")
    assert isinstance(empty, InvalidRequest)
    assert empty.field == "owner"
    long = door.call(b"LEASE", b"CLAIM", b"k", b"o" * 257, b"5")
    assert isinstance(long, InvalidRequest)
    assert (long.maximum, long.requested) == (256, 257)
    assert isinstance(door.call(b"LEASE", b"CLAIM", b"s", b"w", b"5"), WrongType)
    assert isinstance(door.call(b"LEASE", b"INFO", b"s"), WrongType)
    assert door.entries() == before


def test_a_claim_counts_against_the_quota(backend: Backend) -> None:
    """A claim that would pass the namespace's key quota is refused."""
    door = Door(backend, quota=Quota(max_keys=1))
    assert isinstance(door.call(b"LEASE", b"CLAIM", b"a", b"w", b"5"), int)
    refused = door.call(b"LEASE", b"CLAIM", b"b", b"w", b"5")
    assert type(refused).__name__ == "QuotaExceeded"


def test_the_python_lease_claims_renews_and_releases() -> None:
    """``with stash.lease(...)``: a token, LeaseHeld for another owner, released on leaving."""
    with Stash("memory") as stash:
        with stash.lease("task:42", ttl=30) as lease:
            first = lease.token
            lease.renew()
            with pytest.raises(LeaseHeld) as held, stash.lease("task:42", ttl=30):
                pass
            assert held.value.retry_after_ms is not None
            assert 0 < held.value.retry_after_ms <= 30_000
        with stash.lease("task:42", ttl=30, owner="w2") as again:
            assert again.token > first


async def test_the_async_lease_claims_and_releases() -> None:
    """``async with astash.lease(...)`` behaves as the blocking one."""
    async with AsyncStash("memory") as stash:
        async with stash.lease("task:1", ttl=5) as lease:
            token = lease.token
            other = stash.lease("task:1", ttl=5)
            with pytest.raises(LeaseHeld):
                await other.claim()
        async with stash.lease("task:1", ttl=5) as lease:
            assert lease.token > token


def _worker(port: int, name: str, keys: list[str], check: _Ledger) -> None:
    client = redis.Redis(port=port)
    for key in keys:
        token = client.execute_command("LEASE", "CLAIM", key, name, 30)
        if token is None:
            continue
        check.took(key, name, token)
        check.left(key, name)
        assert client.execute_command("LEASE", "RELEASE", key, name, token) == 1
    client.close()


class _Ledger:
    """What the workers saw: who holds each lease now, and each lease's last token."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.holder: dict[str, str] = {}
        self.last: dict[str, int] = {}
        self.claims = 0

    def took(self, key: str, name: str, token: int) -> None:
        with self.lock:
            assert key not in self.holder, f"{key} held by {self.holder.get(key)} and {name}"
            assert token > self.last.get(key, 0)
            self.holder[key] = name
            self.last[key] = token
            self.claims += 1

    def left(self, key: str, name: str) -> None:
        with self.lock:
            assert self.holder.pop(key) == name


@pytest.mark.slow
def test_workers_on_two_nodes_never_share_a_lease(server: RedisServer) -> None:
    """20 workers on two nodes race for 100 leases: one holder each, tokens always grow."""
    a, b = redis_nodes(server.url)
    with a, b:
        keys = [f"task:{i}" for i in range(100)]
        ledger = _Ledger()
        threads = []
        for n in range(20):
            order = keys[:]
            random.Random(n).shuffle(order)
            port = (a, b)[n % 2].port
            threads.append(threading.Thread(target=_worker, args=(port, f"w{n}", order, ledger)))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert ledger.claims >= len(keys)
        # A worker whose lease expired is refused, on whichever node it asks.
        ca, cb = redis.Redis(port=a.port), redis.Redis(port=b.port)
        token = ca.execute_command("LEASE", "CLAIM", "short", "slow", 30)
        # The lease ends in a millisecond instead of its TTL; waiting is one PTTL or two.
        ca.pexpire("short", 1)
        while cb.pttl("short") != -2:
            pass
        with Stash(url=f"redis://127.0.0.1:{b.port}") as stash, stash.lease("short") as lease:
            assert lease.token > token
            assert ca.execute_command("LEASE", "RENEW", "short", "slow", token, 5) == 0
            assert ca.execute_command("LEASE", "RELEASE", "short", "slow", token) == 0
            with (
                pytest.raises(LeaseHeld) as held,
                Stash(url=f"redis://127.0.0.1:{a.port}") as other,
            ):
                other.lease("short").claim()
            assert held.value.retry_after_ms is not None
            assert 0 < held.value.retry_after_ms <= 30_000
        ca.close()
        cb.close()


#: A namespace of this module's own on the shared daemon.
_KEY: Final = f"leases-{uuid.uuid4().hex}"


def _http(url: str, method: str, body: object = None) -> tuple[int, dict[str, object]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, method=method)  # noqa: S310 - the test's daemon
    request.add_header("Content-Type", "application/json")
    request.add_header("X-API-KEY", _KEY)
    try:
        with urllib.request.urlopen(request) as response:  # noqa: S310 - the test's daemon
            raw = response.read()
            return response.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_http_door_claims_renews_and_releases(stashd_server: StashDaemon) -> None:
    """POST, PATCH and DELETE /lease/{key}: 201 with a token, 409 while held or not owned."""
    url = f"{stashd_server.http_url}/lease/task%3A9"
    status, lease = _http(url, "POST", {"owner": "w1", "ttl": 30})
    assert status == 201
    assert (lease["owner"], lease["ttl_remaining"]) == ("w1", 30)
    token = lease["token"]
    status, held = _http(url, "POST", {"owner": "w2", "ttl": 30})
    assert status == 409
    error = held["error"]
    assert isinstance(error, dict)
    assert error["code"] == "lease_held"
    assert "w1" not in json.dumps(held)
    status, _ = _http(url, "PATCH", {"owner": "w2", "token": token, "ttl": 60})
    assert status == 409
    status, renewed = _http(url, "PATCH", {"owner": "w1", "token": token, "ttl": 60})
    assert (status, renewed["ttl_remaining"], renewed["token"]) == (200, 60, token)
    assert _http(url, "DELETE", {"owner": "w2", "token": token})[0] == 409
    assert _http(url, "DELETE", {"owner": "w1", "token": token})[0] == 204
    assert _http(url, "GET")[0] == 404  # released: no one holds it
    status, again = _http(url, "POST", {"owner": "w2", "ttl": 30})
    assert status == 201
    assert isinstance(again["token"], int)
    assert isinstance(token, int)
    assert again["token"] > token
    status, _ = _http(url, "POST", {"owner": "", "ttl": 0})
    assert status == 422


_STEPS = st.lists(
    st.tuples(st.sampled_from(["claim", "renew", "release", "wait"]), st.integers(0, 2)),
    max_size=40,
)


@given(steps=_STEPS)
def test_tokens_only_grow_whatever_happens(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, int]]
) -> None:
    """Any run of claims, renews, releases and waits by three owners: granted tokens grow."""
    backend = open_backend("memory", ManualClock(T0), tmp_path_factory.mktemp("leases"))
    try:
        door = Door(backend)
        clock = _clock(backend)
        last = 0
        held: dict[int, int] = {}
        for action, who in steps:
            owner = f"w{who}".encode()
            if action == "wait":
                clock.now += 700 * (who + 1)  # past a 1-second lease, or not
            elif action == "claim":
                token = door.call(b"LEASE", b"CLAIM", b"k", owner, b"1")
                if token is not None:
                    assert token > last
                    last = token
                    held[who] = token
            elif who in held:
                args = [b"LEASE", action.upper().encode(), b"k", owner, str(held[who]).encode()]
                door.call(*args, *([b"1"] if action == "renew" else []))
    finally:
        backend.close()
