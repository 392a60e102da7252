"""The HTTP door in strict mode agrees with RESP: registered keys, one rate per user, one throttle."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stashd.registry import SQLiteRegistry
from stashd.tiers import resolve
from tests.support.resp_client import RespClient
from tests.support.servers import StashDaemon
from tests.test_strict import _key, _revoke


def call(
    daemon: StashDaemon, method: str, path: str, body: object = None, key: str | None = None
) -> tuple[int, dict[str, str], Any]:
    """One HTTP request: (status, headers, parsed JSON body or None)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(daemon.http_url + path, data=data, method=method)  # noqa: S310 - loopback test server
    if key is not None:
        request.add_header("X-API-KEY", key)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            raw = response.read()
            return response.status, dict(response.headers), json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, dict(exc.headers), json.loads(raw) if raw else None


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("httpstrict") / "stash.db"
    SQLiteRegistry(path).close()
    return path


@pytest.fixture(scope="module")
def daemon(db: Path) -> Iterator[StashDaemon]:
    with StashDaemon("--auth", "keys", "--db", str(db), "--backend", "memory") as d:
        yield d


def test_missing_bad_and_revoked_keys_get_the_same_401(daemon: StashDaemon, db: Path) -> None:
    """No key, an unknown key and a revoked key are all 401; a registered key works."""
    secret, key_id, _ = _key(db, "pro")
    status, _, created = call(daemon, "POST", "/stash", {"data": {"a": 1}}, key=secret)
    assert status == 201
    mid = created["memory_id"]
    status, _, missing = call(daemon, "GET", f"/recall/{mid}")
    assert status == 401
    assert missing["error"]["code"] == "unauthorized"
    bodies = set()
    for key in ("sk_live_nonsense", secret[:-1] + ("A" if secret[-1] != "A" else "B")):
        status, _, body = call(daemon, "GET", f"/recall/{mid}", key=key)
        assert status == 401
        bodies.add(json.dumps(body))
    _revoke(db, key_id)
    status, _, body = call(daemon, "GET", f"/recall/{mid}", key=secret)
    assert status == 401
    bodies.add(json.dumps(body))
    assert len(bodies) == 1  # never says which of the three it was


def test_user_data_crosses_doors_and_keys(daemon: StashDaemon, db: Path) -> None:
    """Stored over HTTP with one key, read over RESP with another key of the same user."""
    first, _, user = _key(db, "pro")
    second, _, _ = _key(db, "pro", user)
    status, _, created = call(daemon, "POST", "/stash", {"data": [1, 2], "ttl": 600}, key=first)
    assert status == 201
    c = RespClient(daemon.port)
    assert c.call("AUTH", second).render() == "+OK"
    assert c.call("RECALL", created["memory_id"]).render() == "$'[1,2]'"
    c.close()


def test_free_tier_ttl_cap_over_http(daemon: StashDaemon, db: Path) -> None:
    """A free user's TTL above one hour is 422 naming the bounds, as BADTTL does over RESP."""
    secret, _, _ = _key(db, "free")
    status, _, body = call(daemon, "POST", "/stash", {"data": 1, "ttl": 7200}, key=secret)
    assert status == 422
    assert body["error"]["code"] == "invalid_ttl"
    assert body["error"]["maximum"] == resolve()["free"].max_ttl_ms // 1000


def test_one_rate_for_both_doors(daemon: StashDaemon, db: Path) -> None:
    """The free tier's burst is shared by RESP and HTTP; the 429 says when to retry."""
    secret, _, _ = _key(db, "free")
    burst = resolve()["free"].rate
    assert burst is not None
    c = RespClient(daemon.port)
    assert c.call("AUTH", secret).render() == "+OK"
    for _ in range(burst.burst // 2):
        assert c.call("GET", "x").render() == "(nil)"
    statuses = []
    headers: dict[str, str] = {}
    for _ in range(burst.burst):
        status, headers, _ = call(daemon, "GET", "/recall/nothing", key=secret)
        statuses.append(status)
    assert statuses.count(404) == burst.burst - burst.burst // 2
    assert statuses[-1] == 429
    assert int(headers["Retry-After"]) >= 1
    assert headers["RateLimit-Policy"] == f'"default";q={burst.limit};w={burst.period_s}'
    assert c.call("GET", "x").render().startswith("-RATELIMIT")
    c.close()


def test_failed_keys_over_http_throttle_the_address(tmp_path: Path) -> None:
    """Guessing keys over HTTP is slowed like failed AUTHs: even a good key is then refused."""
    db = tmp_path / "stash.db"
    SQLiteRegistry(db).close()
    secret, _, _ = _key(db, "pro")
    with StashDaemon("--auth", "keys", "--db", str(db), "--backend", "memory") as daemon:
        for _ in range(20):
            status, _, _ = call(daemon, "GET", "/recall/x", key="sk_live_guess")
            assert status == 401
        status, _, _ = call(daemon, "GET", "/recall/x", key=secret)
        assert status == 401
        c = RespClient(daemon.port)
        assert c.call("AUTH", secret).render().startswith("-WRONGPASS")
