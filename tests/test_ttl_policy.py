"""--over-max-ttl: a TTL past the maximum is refused (the default) or clamped, on every backend and door."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from stashd import Stash
from stashd.commands.base import Session
from stashd.config import ConfigError, load
from stashd.errors import InvalidTTL, PersistRefused
from stashd.service import MemoryService
from stashd.tenancy import OpenKeyring
from stashd.types import Limits, Principal
from tests.support.backends import Backend, open_backend, server_url
from tests.support.clock import Clock
from tests.support.http import sidecar
from tests.support.servers import StashDaemon

T0 = 1_700_000_000_000
NS = "alice"
MAX_S = 3600
BACKENDS = ("memory", "sqlite", "redis")
# What Django's cache sessions send on their default settings: 14 days.
DJANGO_SESSION = (b"SET", b"django.contrib.sessions.cache:k", b"v", b"NX", b"PX", b"1209600000")


class Door:
    """One backend and a RESP session whose caller has the given TTL policy."""

    def __init__(self, backend: Backend, *, clamp: bool) -> None:
        self.backend = backend
        limits = Limits(1024, 600_000, MAX_S * 1000, clamp_ttl=clamp)
        self.session = Session(MemoryService(backend.store), OpenKeyring(limits), None)
        self.session.principal = Principal(NS, limits, NS)

    def call(self, *words: bytes) -> Any:  # noqa: ANN401 - each command has its own reply
        """Run one request as dispatch does; a refusal is returned, not raised."""
        return self.backend.call(self.session, *words)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    opened = open_backend(request.param, Clock(T0), tmp_path, server_url(request, request.param))
    yield opened
    opened.close()


def test_refuse_is_the_default_and_changes_nothing(backend: Backend) -> None:
    """Without the setting, a longer TTL and PERSIST are refused, naming the maximum."""
    assert load({}).over_max_ttl == "refuse"
    door = Door(backend, clamp=False)
    refused = door.call(*DJANGO_SESSION)
    assert isinstance(refused, InvalidTTL)
    assert (refused.requested, refused.maximum) == (1209600, MAX_S)
    assert door.call(b"EXISTS", DJANGO_SESSION[1]) == 0
    assert door.call(b"SET", b"k", b"v") == "OK"
    assert isinstance(door.call(b"EXPIRE", b"k", b"7200"), InvalidTTL)
    assert isinstance(door.call(b"PERSIST", b"k"), PersistRefused)
    assert door.call(b"TTL", b"k") == 600


def test_clamp_stores_the_maximum_and_answers_as_redis(backend: Backend) -> None:
    """SET/EXPIRE/GETEX past the maximum get it; PERSIST sets it: 1, or 0 for a missing key."""
    door = Door(backend, clamp=True)
    assert door.call(*DJANGO_SESSION) == "OK"
    assert door.call(b"TTL", DJANGO_SESSION[1]) == MAX_S
    assert door.call(b"SET", b"k", b"v", b"EX", b"60") == "OK"
    assert door.call(b"EXPIRE", b"k", b"2678400") == 1  # Flask-Session's 31 days
    assert door.call(b"TTL", b"k") == MAX_S
    assert door.call(b"EXPIRE", b"k", b"60") == 1
    assert door.call(b"PERSIST", b"k") == 1
    assert door.call(b"TTL", b"k") == MAX_S
    assert door.call(b"PERSIST", b"missing") == 0
    assert door.call(b"EXISTS", b"missing") == 0, "PERSIST creates nothing"
    assert door.call(b"SET", b"g", b"v", b"EX", b"60") == "OK"
    assert door.call(b"GETEX", b"g", b"PERSIST") == b"v"
    assert door.call(b"TTL", b"g") == MAX_S
    at = T0 // 1000 + 10 * MAX_S
    assert door.call(b"SET", b"at", b"v", b"EXAT", str(at).encode()) == "OK"
    assert door.call(b"TTL", b"at") == MAX_S
    memory_id = door.call(b"STASH", b"{}", b"EX", b"99999")
    assert door.call(b"TTL", memory_id) == MAX_S
    assert door.call(b"UPDATE", memory_id, b"EXTEND", b"99999") == MAX_S


def test_the_setting_is_checked_and_reaches_every_tier() -> None:
    """Only refuse or clamp; strict mode's tiers each keep their maximum under the policy."""
    with pytest.raises(ConfigError, match="over_max_ttl must be one of refuse, clamp, got 'cut'"):
        load({"over_max_ttl": "cut"})
    table = load({"over_max_ttl": "clamp"}).tier_table()
    assert all(limits.clamp_ttl for limits in table.values())
    assert not any(limits.clamp_ttl for limits in load({}).tier_table().values())


def test_the_python_api_clamps_when_told(tmp_path: Path) -> None:
    """Stash(over_max_ttl="clamp") stores past-the-maximum TTLs with the maximum."""
    with Stash(path=tmp_path / "p.db", max_ttl=MAX_S, over_max_ttl="clamp") as stash:
        stash.set("k", 1, ttl=10 * MAX_S)
        assert stash.ttl("k") == MAX_S
    with Stash(path=tmp_path / "p.db", max_ttl=MAX_S) as stash, pytest.raises(InvalidTTL):
        stash.set("k", 1, ttl=10 * MAX_S)


async def test_http_clamps_a_long_ttl() -> None:
    """POST /stash with a TTL past the maximum: 201 with the maximum, under clamp."""
    limits = Limits(1024, 600_000, MAX_S * 1000, clamp_ttl=True)
    async with (
        sidecar(keyring=OpenKeyring(limits)) as s,
        s.session.post("/stash", json={"data": 1, "ttl": 10 * MAX_S}) as resp,
    ):
        assert resp.status == 201
        assert (await resp.json())["ttl"] == MAX_S


def test_redis_py_persist_and_long_sessions_on_a_clamping_daemon() -> None:
    """What django-redis persist(), aiocache and Django's sessions send, from redis-py."""
    with StashDaemon("--over-max-ttl", "clamp", "--max-ttl", str(MAX_S), "--no-http") as d:
        r = redis.Redis(port=d.port)
        assert r.set("session", "v", nx=True, px=1209600000)
        assert r.ttl("session") == MAX_S
        assert r.persist("session")
        assert r.ttl("session") == MAX_S
        r.close()


#: A Django project's cache sessions on their default settings (14 days), against ``url``.
_DJANGO_SESSIONS = """
import sys
import django
from django.conf import settings

settings.configure(
    SECRET_KEY="test-only",
    INSTALLED_APPS=["django.contrib.sessions"],
    CACHES={"default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": sys.argv[1],
    }},
    SESSION_ENGINE="django.contrib.sessions.backends.cache",
)
django.setup()
from django.contrib.sessions.backends.cache import SessionStore

session = SessionStore()
session["plan"] = "step 2"
session.save()
print(session.session_key)
print(SessionStore(session_key=session.session_key)["plan"])
"""


@pytest.mark.parametrize("policy", ["clamp", "refuse"])
def test_django_cache_sessions_work_on_a_clamping_daemon(policy: str) -> None:
    """Django's cache sessions (SET NX PX for 14 days) save and load under clamp only."""
    with StashDaemon("--over-max-ttl", policy, "--max-ttl", str(MAX_S), "--no-http") as d:
        ran = subprocess.run(  # noqa: S603 - this interpreter, a script of the test's own
            [sys.executable, "-c", _DJANGO_SESSIONS, f"redis://127.0.0.1:{d.port}/0"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if policy == "refuse":
            assert ran.returncode != 0
            assert "BADTTL" in ran.stderr
            return
        assert ran.returncode == 0, ran.stderr
        key, plan = ran.stdout.splitlines()
        assert plan == "step 2"
        r = redis.Redis(port=d.port)
        (stored,) = r.keys(f"*{key}")
        assert r.ttl(stored) == MAX_S
        r.close()
