"""How a client picks its mode and limits, and an embedded SQLite file shared with others.

Arguments first, then STASH_URL / STASH_API_KEY (environment over .env), then the
daemon's own settings for embedded limits. The sharing tests run a daemon and other
processes on one file, as an application and stashd on one machine would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stashd import AsyncStash, InvalidTTL, PayloadTooLarge, Stash
from stashd.clientmode import DEFAULT_URL
from stashd.config import ConfigError
from stashd.store.base import StoreOpenError
from tests.support.servers import StashDaemon


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No STASH_* variable or .env file of the machine running the tests leaks in."""
    for name in [n for n in os.environ if n.startswith("STASH_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("STASH_DB", str(tmp_path / "default.db"))
    monkeypatch.chdir(tmp_path)


# -- choosing the mode -------------------------------------------------------------------


def test_no_arguments_open_the_configured_sqlite_file(tmp_path: Path) -> None:
    """Stash() is embedded SQLite at STASH_DB (the daemon's file), made on first use."""
    with Stash() as stash:
        assert repr(stash) == f"<Stash embedded sqlite at {tmp_path / 'default.db'}>"
        stash.set("k", 1)
    assert (tmp_path / "default.db").is_file()


def test_backend_and_path_choose_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A path means SQLite even when STASH_BACKEND says memory; 'memory' keeps nothing."""
    monkeypatch.setenv("STASH_BACKEND", "memory")
    with Stash() as stash:
        assert repr(stash) == "<Stash embedded memory>"
    with Stash(path=tmp_path / "work.db") as stash:
        assert repr(stash) == f"<Stash embedded sqlite at {tmp_path / 'work.db'}>"
    with Stash("sqlite", path=str(tmp_path / "other.db")) as stash:
        assert "other.db" in repr(stash)


def test_remote_is_chosen_by_url_key_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """url or api_key select remote; so do STASH_URL / STASH_API_KEY unless embedded is asked."""
    assert repr(Stash(url="redis://example.invalid:7000")) == (
        "<Stash remote redis://example.invalid:7000>"
    )
    assert repr(Stash(api_key="k")) == f"<Stash remote {DEFAULT_URL}>"
    monkeypatch.setenv("STASH_URL", "")  # empty is unset
    assert repr(Stash()).startswith("<Stash embedded sqlite")
    monkeypatch.setenv("STASH_URL", "redis://10.0.0.9:6390")
    assert repr(Stash()) == "<Stash remote redis://10.0.0.9:6390>"
    assert repr(AsyncStash()) == "<AsyncStash remote redis://10.0.0.9:6390>"
    assert repr(Stash("memory")) == "<Stash embedded memory>"  # explicit beats environment
    monkeypatch.delenv("STASH_URL")
    monkeypatch.setenv("STASH_API_KEY", "from-env")
    stash = Stash()
    assert repr(stash) == f"<Stash remote {DEFAULT_URL}>"
    assert stash._t.redis.connection_pool.connection_kwargs["password"] == "from-env"


def test_repr_and_signatures_say_what_they_are(tmp_path: Path) -> None:
    """repr names the mode and the file; an update argument not given shows as <unset>."""
    import inspect  # noqa: PLC0415

    with Stash("memory") as stash:
        assert repr(stash) == "<Stash embedded memory>"
    assert (
        repr(AsyncStash(path=tmp_path / "a.db"))
        == f"<AsyncStash embedded sqlite at {tmp_path / 'a.db'}>"
    )
    assert "data: 'object' = <unset>" in str(inspect.signature(Stash.update))


def test_dotenv_names_the_daemon_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """STASH_URL in .env selects remote, and the environment wins over it."""
    (tmp_path / ".env").write_text("STASH_URL=redis://127.0.0.1:7111\n")
    assert repr(Stash()) == "<Stash remote redis://127.0.0.1:7111>"
    monkeypatch.setenv("STASH_URL", "redis://127.0.0.1:7222")
    assert repr(Stash()) == "<Stash remote redis://127.0.0.1:7222>"


def test_the_key_never_shows_in_repr() -> None:
    """A password in the URL is masked."""
    stash = Stash(url="redis://user:sk_live_secret@127.0.0.1:6380/0")
    assert repr(stash) == "<Stash remote redis://user:***@127.0.0.1:6380/0>"
    assert "secret" not in repr(Stash(url="redis://:sk_live_secret@localhost"))


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"backend": "memory", "url": "redis://x"}, "give one kind"),
        ({"path": "a.db", "api_key": "k"}, "give one kind"),
        ({"url": "redis://x", "max_ttl": 60}, "max_ttl: in remote mode the daemon's settings"),
        ({"backend": "memory", "path": "a.db"}, "the memory backend has none"),
        ({"backend": "disk"}, "backend must be one of"),
        ({"backend": "memory", "default_ttl": 900, "max_ttl": 60}, r"default_ttl \(900\)"),
        ({"backend": "memory", "max_payload_bytes": 0}, "max_payload_bytes must be positive"),
        ({"backend": "memory", "rate_limit": "fast"}, "rate must look like 600/min"),
    ],
)
def test_contradictions_and_bad_settings_are_value_errors(
    kwargs: dict[str, Any], text: str
) -> None:
    """A clear ValueError names the argument and what was wrong with it."""
    with pytest.raises(ValueError, match=text):
        Stash(**kwargs)


def test_bad_environment_settings_say_which(monkeypatch: pytest.MonkeyPatch) -> None:
    """A broken STASH_* setting is a ConfigError naming the variable."""
    monkeypatch.setenv("STASH_MAX_TTL", "a day")
    with pytest.raises(ConfigError, match="STASH_MAX_TTL must be an integer, got 'a day'"):
        Stash("memory")


def test_an_unusable_file_fails_at_construction(tmp_path: Path) -> None:
    """The file is opened when the client is made, so a bad path fails there, clearly."""
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreOpenError, match="cannot open the database"):
        Stash(path=tmp_path / "dir.db")
    with pytest.raises(StoreOpenError):
        AsyncStash(path=tmp_path / "dir.db")


def test_embedded_limits_come_from_the_daemons_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """STASH_MAX_TTL, STASH_DEFAULT_TTL, STASH_MAX_PAYLOAD_BYTES apply; arguments win."""
    monkeypatch.setenv("STASH_MAX_TTL", "120")
    monkeypatch.setenv("STASH_DEFAULT_TTL", "30")
    monkeypatch.setenv("STASH_MAX_PAYLOAD_BYTES", "100")
    with Stash("memory") as stash:
        stash.set("k", 1)
        assert stash.ttl("k") == 30
        with pytest.raises(InvalidTTL) as caught:
            stash.set("k", 1, ttl=121)
        assert caught.value.maximum == 120
        with pytest.raises(PayloadTooLarge) as big:
            stash.set("k", "x" * 100)
        assert big.value.limit == 100
    with Stash("memory", max_ttl=600, max_payload_bytes=1000) as stash:
        stash.set("k", "x" * 500, ttl=600)
        assert stash.ttl("k") == 600


@settings(max_examples=60, deadline=None)
@given(
    value=st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(st.characters(exclude_categories=["Cs"])),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(st.text(st.characters(exclude_categories=["Cs"])), inner, max_size=4)
        ),
        max_leaves=12,
    )
)
def test_any_json_value_round_trips(value: object) -> None:
    """Whatever JSON value goes in comes out equal (the encoding is the same in every mode)."""
    with Stash("memory") as stash:
        stash.set("k", value)
        assert stash.get("k") == value
        assert repr(stash.get("k")) == repr(value)  # 1.0 stays a float, True a bool


# -- one file, several users ---------------------------------------------------------------


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[tuple[Path, StashDaemon]]:
    """A SQLite file and a daemon serving it."""
    db = tmp_path / "shared.db"
    with StashDaemon("--no-http", db=db) as daemon:
        yield db, daemon


def test_an_embedded_file_is_shared_with_a_daemon(shared: tuple[Path, StashDaemon]) -> None:
    """What the application writes in-process, a keyless remote client reads, and back."""
    db, daemon = shared
    with Stash(path=db) as local, Stash(url=f"redis://127.0.0.1:{daemon.port}") as remote:
        local.set("from-app", {"n": 1}, ttl=300)
        memory_id = remote.stash({"from": "daemon"})
        assert remote.get("from-app") == {"n": 1}
        assert remote.ttl("from-app") in (299, 300)
        assert local.recall(memory_id) == {"from": "daemon"}
        assert local.update(memory_id, merge={"seen": True}, if_version=1) is not None
        meta = remote.recall(memory_id, with_meta=True)
        assert meta is not None
        assert (meta.data, meta.version) == ({"from": "daemon", "seen": True}, 2)
        assert sorted(local.keys()) == sorted(remote.keys()) == sorted(["from-app", memory_id])
        with Stash(url=f"redis://127.0.0.1:{daemon.port}", api_key="someone") as other:
            assert other.get("from-app") is None  # a key is a namespace of its own


def test_a_daemon_spoken_to_in_resp2_reads_the_same(shared: tuple[Path, StashDaemon]) -> None:
    """protocol=2 in the URL (redis-py's option) gives flat arrays; the record is the same."""
    _, daemon = shared
    with Stash(url=f"redis://127.0.0.1:{daemon.port}/?protocol=2", api_key="resp2") as stash:
        memory_id = stash.stash({"a": 1}, ttl=100)
        meta = stash.recall(memory_id, with_meta=True)
        assert meta is not None
        assert (meta.data, meta.version, meta.ttl_remaining in (99, 100)) == ({"a": 1}, 1, True)
        assert list(stash.keys()) == [memory_id]


_WORKER = textwrap.dedent(
    """
    import sys
    from stashd import Conflict, Stash

    path, memory_id, times = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with Stash(path=path) as stash:
        stash.set(f"pid-{sys.argv[4]}", "was here")
        for _ in range(times):
            while True:
                meta = stash.recall(memory_id, with_meta=True)
                try:
                    stash.update(memory_id, {"n": meta.data["n"] + 1}, if_version=meta.version)
                    break
                except Conflict:
                    pass
    """
)


async def test_processes_and_a_daemon_update_one_file_without_losing_a_write(
    shared: tuple[Path, StashDaemon],
) -> None:
    """Two processes and an async client through the daemon increment one counter."""
    db, daemon = shared
    with Stash(path=db) as stash:
        memory_id = stash.stash({"n": 0})
    times = 60
    workers = [
        subprocess.Popen([sys.executable, "-c", _WORKER, str(db), memory_id, str(times), str(i)])
        for i in range(2)
    ]
    async with AsyncStash(url=f"redis://127.0.0.1:{daemon.port}") as remote:
        for _ in range(times):
            while True:
                meta = await remote.recall(memory_id, with_meta=True)
                assert meta is not None
                try:
                    await remote.update(
                        memory_id, {"n": meta.data["n"] + 1}, if_version=meta.version
                    )
                    break
                except Exception as exc:  # Conflict: another process won this round
                    assert type(exc).__name__ == "Conflict"
    for worker in workers:
        assert worker.wait(60) == 0
    with Stash(path=db) as stash:
        assert stash.recall(memory_id) == {"n": 3 * times}
        assert stash.get("pid-0") == stash.get("pid-1") == "was here"


async def test_async_embedded_reads_see_other_writers_at_once(tmp_path: Path) -> None:
    """A task that never yields still sees what another client committed between its reads."""
    db = tmp_path / "fresh.db"
    async with AsyncStash(path=db) as astash:
        await astash.set("k", 1)
        with Stash(path=db) as other:
            assert await astash.get("k") == 1
            other.set("k", 2)
            assert await astash.get("k") == 2
            other.forget("k")
            assert not await astash.exists("k")
