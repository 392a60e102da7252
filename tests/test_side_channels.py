"""No side channel between tenants: what one tenant sees of cursors and ids is its own.

Each test does what an attacker with one key did: tenant A writes, tenant B writes many
keys or memories in between (or not), and A reads its cursors and ids. Whatever B did
must leave no trace there: SCAN cursors and the listing's ``next_cursor`` count A's own
keys only, and A's ids come from blocks of A's own. Real daemons, real redis-py and a
real HTTP client (urllib), in open mode (each key its own namespace) and strict mode
(registered users).
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from stashd.ids import BASE62, PREFIX_LENGTH
from stashd.registry import SQLiteRegistry
from stashd.tenancy import issue_key
from tests.support.servers import RedisServer, StashDaemon

#: A's keys, and how many B writes between two of them when B is busy.
A_KEYS = 12
B_BETWEEN = 40


@pytest.fixture(scope="module", params=["memory", "sqlite", "redis"])
def daemon(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StashDaemon]:
    """An open-mode daemon per backend (Redis: a redis-server of the module's own)."""
    if request.param == "redis":
        with (
            RedisServer() as store,
            StashDaemon("--backend", "redis", "--redis-url", store.url) as d,
        ):
            yield d
        return
    db = tmp_path_factory.mktemp("side") / "stash.db"
    with StashDaemon("--backend", request.param, db=db) as d:
        yield d


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StashDaemon, Path]]:
    """A strict-mode daemon (SQLite) and the file its keys are registered in."""
    db = tmp_path_factory.mktemp("strict") / "stash.db"
    SQLiteRegistry(db).close()
    with StashDaemon("--auth", "keys", "--db", str(db)) as d:
        yield d, db


def _open_key() -> str:
    """A key of a namespace nobody has used: open mode makes one per key."""
    return f"tenant-{uuid.uuid4().hex}"


def _strict_key(db: Path) -> str:
    registry = SQLiteRegistry(db)
    try:
        return issue_key(registry, f"u{uuid.uuid4().hex[:12]}", "enterprise").secret
    finally:
        registry.close()


def _resp(d: StashDaemon, key: str) -> redis.Redis:
    return redis.Redis(port=d.port, password=key, protocol=2)


def _http(d: StashDaemon, key: str, method: str, path: str, body: object = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - a local http:// URL
        d.http_url + path,
        data=data,
        method=method,
        headers={"X-API-KEY": key, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310
        return json.loads(reply.read())


def _scan_cursors(client: redis.Redis) -> list[int]:
    """Every cursor of a SCAN with COUNT 1, the closing 0 included."""
    cursors, cursor = [], 0
    while True:
        cursor, _ = client.scan(cursor, count=1)
        cursors.append(cursor)
        if cursor == 0:
            return cursors


def _listing_cursors(d: StashDaemon, key: str) -> list[str | None]:
    """Every ``next_cursor`` of GET /stash with limit 1, the closing null included."""
    cursors: list[str | None] = []
    query = "?limit=1"
    while True:
        page = _http(d, key, "GET", "/stash" + query)
        assert isinstance(page, dict)
        cursors.append(page["next_cursor"])
        if page["next_cursor"] is None:
            return cursors
        query = f"?limit=1&cursor={page['next_cursor']}"


def _resp_run(d: StashDaemon, a_key: str, b_key: str, *, busy: bool) -> list[int]:
    """A sets its keys, B sets B_BETWEEN keys between two of A's when busy; A's SCAN cursors."""
    a, b = _resp(d, a_key), _resp(d, b_key)
    try:
        for i in range(A_KEYS):
            a.set(f"a{i}", "x")
            if busy:
                b.mset({f"b{i}:{j}": "y" for j in range(B_BETWEEN)})
        return _scan_cursors(a)
    finally:
        a.close()
        b.close()


def _http_run(d: StashDaemon, a_key: str, b_key: str, *, busy: bool) -> list[str | None]:
    """The same through POST /stash; A's listing cursors."""
    for _ in range(A_KEYS):
        _http(d, a_key, "POST", "/stash", {"data": 1})
        for _ in range(B_BETWEEN if busy else 0):
            _http(d, b_key, "POST", "/stash", {"data": 2})
    return _listing_cursors(d, a_key)


def test_scan_cursors_show_nothing_of_another_tenants_writes(daemon: StashDaemon) -> None:
    """A's SCAN cursors over RESP are the same whether or not B created keys in between."""
    quiet = _resp_run(daemon, _open_key(), _open_key(), busy=False)
    busy = _resp_run(daemon, _open_key(), _open_key(), busy=True)
    assert busy == quiet
    assert quiet[-1] == 0


def test_listing_cursors_show_nothing_of_another_tenants_writes(daemon: StashDaemon) -> None:
    """A's next_cursor values over HTTP are the same whether or not B stashed in between."""
    quiet = _http_run(daemon, _open_key(), _open_key(), busy=False)
    busy = _http_run(daemon, _open_key(), _open_key(), busy=True)
    assert busy == quiet
    assert len(quiet) == A_KEYS  # a page per key, the last one saying there is no next


def test_cursors_of_registered_users_show_nothing_of_each_other(
    strict: tuple[StashDaemon, Path],
) -> None:
    """Strict mode: one user's cursors, RESP and HTTP, are the same whether or not another wrote."""
    d, db = strict
    quiet = _resp_run(d, _strict_key(db), _strict_key(db), busy=False)
    busy = _resp_run(d, _strict_key(db), _strict_key(db), busy=True)
    assert busy == quiet
    quiet_http = _http_run(d, _strict_key(db), _strict_key(db), busy=False)
    busy_http = _http_run(d, _strict_key(db), _strict_key(db), busy=True)
    assert busy_http == quiet_http


def _number(memory_id: str) -> int:
    """An id's characters after the prefix as a base62 number (its place in its block)."""
    n = 0
    for c in memory_id[PREFIX_LENGTH:]:
        n = n * 62 + BASE62.index(c)
    return n


def _ids(d: StashDaemon, a_key: str, b_key: str, *, busy: bool, over_http: bool) -> list[str]:
    """A's ids of A_KEYS * 4 memories, B stashing B_BETWEEN between two of them when busy."""
    out: list[str] = []
    a, b = _resp(d, a_key), _resp(d, b_key)
    try:
        for _ in range(A_KEYS * 4):
            if over_http:
                reply = _http(d, a_key, "POST", "/stash", {"data": 1})
                assert isinstance(reply, dict)
                out.append(reply["memory_id"])
            else:
                out.append(a.execute_command("STASH", "1").decode())
            for _ in range(B_BETWEEN if busy else 0):
                if over_http:
                    _http(d, b_key, "POST", "/stash", {"data": 2})
                else:
                    b.execute_command("STASH", "2")
    finally:
        a.close()
        b.close()
    return out


def _gaps(ids: list[str]) -> list[int]:
    """Distances between A's consecutive ids where they ascend within one block."""
    return [
        _number(y) - _number(x)
        for x, y in zip(ids, ids[1:], strict=False)
        if x[:PREFIX_LENGTH] == y[:PREFIX_LENGTH] and y > x
    ]


@pytest.mark.parametrize("over_http", [False, True], ids=["resp", "http"])
def test_ids_show_nothing_of_another_tenants_memories(
    daemon: StashDaemon, *, over_http: bool
) -> None:
    """A's ids keep one block's shape and spacing whether or not B stashed between them.

    With ids from one shared block, B's 40 ids between two of A's pushed A's ids 41
    times as far apart (and across blocks): the spacing counted B's memories.
    """
    quiet = _ids(daemon, _open_key(), _open_key(), busy=False, over_http=over_http)
    busy = _ids(daemon, _open_key(), _open_key(), busy=True, over_http=over_http)
    for run in (quiet, busy):
        # 48 ids: a first block (~74) of A's own, ascending from a random id with one wrap.
        assert len({i[:PREFIX_LENGTH] for i in run}) <= 2
        assert len(_gaps(run)) >= len(run) - 3
    ratio = (sum(_gaps(busy)) / len(_gaps(busy))) / (sum(_gaps(quiet)) / len(_gaps(quiet)))
    # Both are means of ~45 spacings of the same kind (coefficient of variation ~0.15):
    # the ratio stays near 1 unless B's count shows (it would be near 41).
    assert 0.4 < ratio < 2.5, ratio
