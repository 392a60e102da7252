"""The SQLite daemon over time: restarts, SIGKILL under load, shared files, concurrent clients."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from stashd.cli_exit import STORE_UNAVAILABLE
from stashd.service import MemoryService
from stashd.store.sqlite import SQLiteStore
from stashd.tenancy import DEFAULT_NAMESPACE
from stashd.types import Limits, Principal
from tests.support.servers import StashDaemon

WRITER = Path(__file__).resolve().parent / "support" / "writer.py"


def integrity(db: Path) -> list[tuple[str]]:
    """PRAGMA integrity_check of the file, by a connection of its own."""
    with sqlite3.connect(db) as conn:
        result: list[tuple[str]] = conn.execute("PRAGMA integrity_check").fetchall()
        return result


def meta(r: redis.Redis, mid: str | bytes) -> dict[bytes, object]:
    """RECALL ... WITHMETA as a dict, in either protocol."""
    reply = r.execute_command("RECALL", mid, "WITHMETA")
    if isinstance(reply, list):
        return dict(zip(reply[::2], reply[1::2], strict=True))
    assert isinstance(reply, dict)
    return reply


@pytest.mark.parametrize("synchronous", ["normal", "full"])
def test_restart_keeps_keys_absolute_expiry_and_versions(tmp_path: Path, synchronous: str) -> None:
    """Stop and start: every key is back, expiring at the same instant, with its version."""
    db = tmp_path / "stash.db"
    with StashDaemon("--sqlite-synchronous", synchronous, db=db) as first:
        r = redis.Redis(port=first.port)
        r.set("plan", "v1", ex=600)
        r.set("plan", "v2", keepttl=True)
        mid = r.execute_command("STASH", '{"step":1}', "EX", 900)
        r.execute_command("UPDATE", mid, "MERGE", '{"step":2}')
        r.incr("n", 41)
        expiry = {k: r.pexpiretime(k) for k in ("plan", mid, "n")}
        versions = meta(r, mid)[b"version"]
        r.close()
    time.sleep(0.05)
    with StashDaemon(db=db) as second:
        r = redis.Redis(port=second.port)
        assert r.get("plan") == b"v2"
        assert r.get("n") == b"41"
        assert {k: r.pexpiretime(k) for k in ("plan", mid, "n")} == expiry
        assert 0 < r.pttl("plan") < 600_000  # counting down, not reset
        info = meta(r, mid)
        assert info[b"data"] == b'{"step":2}'
        assert info[b"version"] == versions == 2
        r.close()
    assert integrity(db) == [("ok",)]


@pytest.mark.slow
def test_sigkill_under_write_load_loses_no_acknowledged_write(tmp_path: Path) -> None:
    """Kill -9 mid-load, restart, and recall every write a client saw acknowledged; several rounds."""
    db = tmp_path / "stash.db"
    rng = random.Random()
    counter_floor = 0
    for round_ in range(4):
        daemon = StashDaemon(db=db)
        daemon.__enter__()
        writer = subprocess.Popen(
            [sys.executable, str(WRITER), str(daemon.port), "6", f"r{round_}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # Kill after a random count of acknowledged writes, not after a fixed time: on a
        # loaded machine the writer may not have written anything yet after a second.
        assert writer.stdout is not None
        seen: list[str] = []
        sets_wanted, sets_seen = rng.randint(60, 800), 0
        while sets_seen < sets_wanted:
            line = writer.stdout.readline()
            if not line:
                break
            seen.append(line)
            sets_seen += line.startswith("set ")
        assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
        rest, err = writer.communicate(timeout=60)
        out = "".join(seen) + rest
        daemon.__exit__(None, None, None)
        lines = out.splitlines()
        assert not [line for line in lines if line.startswith("error")], lines[-5:]
        sets = [line.split()[1:] for line in lines if line.startswith("set ")]
        stashes = [line.split(" ", 2)[1:] for line in lines if line.startswith("stash ")]
        incrs = [int(line.split()[1]) for line in lines if line.startswith("incr ")]
        assert len(sets) > 50, (out[-500:], err[-2000:])

        assert integrity(db) == [("ok",)]
        with StashDaemon(db=db) as again:
            r = redis.Redis(port=again.port)
            for start in range(0, len(sets), 500):
                chunk = sets[start : start + 500]
                got = r.mget([key for key, _ in chunk])
                missing = [k for (k, v), g in zip(chunk, got, strict=True) if g != v.encode()]
                assert not missing, f"round {round_}: acknowledged but lost: {missing[:5]}"
            for mid, doc in stashes:
                assert r.execute_command("RECALL", mid) == doc.encode(), mid
            counter = int(r.get(f"r{round_}:counter") or 0)
            assert counter >= max(incrs, default=0)
            counter_floor += len(sets)
            assert r.dbsize() >= counter_floor
            r.close()


def test_two_daemons_and_an_application_share_one_file(tmp_path: Path) -> None:
    """Two daemons and an in-process store write one file at once: no errors, no lost INCR."""
    db = tmp_path / "shared.db"
    errors: list[BaseException] = []
    with StashDaemon(db=db) as a, StashDaemon(db=db) as b:
        app_store = SQLiteStore(db)
        svc = MemoryService(app_store)
        anon = Principal(DEFAULT_NAMESPACE, Limits(1 << 20, 3_600_000, 86_400_000))

        def client(port: int) -> Callable[[], None]:
            def run() -> None:
                try:
                    r = redis.Redis(port=port)
                    for i in range(150):
                        r.incr("shared")
                        pipe = r.pipeline(transaction=False)
                        pipe.set(f"p{port}:{threading.get_ident()}:{i}", "x").incr("shared")
                        pipe.execute()
                    r.close()
                except BaseException as exc:  # pragma: no cover - reported below
                    errors.append(exc)

            return run

        def application() -> None:
            try:
                for _ in range(150):
                    app_store.run(svc.incr(anon, b"shared", 1))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=client(d.port)) for d in (a, b, a, b)]
        threads += [threading.Thread(target=application) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        r = redis.Redis(port=a.port)
        assert r.get("shared") == b"%d" % (4 * 150 * 2 + 2 * 150)
        assert redis.Redis(port=b.port).dbsize() == 4 * 150 + 1
        app_store.close_threads()
        r.close()
    assert integrity(db) == [("ok",)]


@pytest.mark.parametrize("backend", ["sqlite", "memory"])
def test_merge_ifversion_and_incr_are_atomic_under_concurrent_clients(backend: str) -> None:
    """Eight clients at once: no MERGE member, INCR or IFVERSION success is ever lost or doubled."""
    with StashDaemon("--backend", backend) as d:
        setup = redis.Redis(port=d.port)
        doc = setup.execute_command("STASH", "{}").decode()
        cas = setup.execute_command("STASH", '{"owner":null}').decode()
        wins: list[tuple[int, int]] = []  # (client, version it replaced)
        errors: list[BaseException] = []

        def client(c: int) -> None:
            try:
                r = redis.Redis(port=d.port)
                for i in range(25):
                    r.execute_command("UPDATE", doc, "MERGE", json.dumps({f"c{c}_{i}": i}))
                    r.incr("hits")
                won = 0
                while won < 5:
                    version = meta(r, cas)[b"version"]
                    assert isinstance(version, int)
                    try:
                        body = json.dumps({"owner": c, "seen": version})
                        r.execute_command("UPDATE", cas, "DATA", body, "IFVERSION", version)
                    except redis.ResponseError as exc:
                        assert str(exc).startswith("CONFLICT version is ")
                        continue
                    wins.append((c, version))
                    won += 1
                r.close()
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=client, args=(c,)) for c in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        merged = json.loads(setup.execute_command("RECALL", doc))
        assert merged == {f"c{c}_{i}": i for c in range(8) for i in range(25)}
        assert meta(setup, doc)[b"version"] == 1 + 8 * 25
        assert setup.get("hits") == b"200"
        # Every compare-and-set replaced a different version: none was applied twice.
        assert sorted(v for _, v in wins) == list(range(1, 1 + 8 * 5))
        assert meta(setup, cas)[b"version"] == 1 + 8 * 5
        setup.close()


def test_a_bad_database_path_stops_the_daemon_with_a_clear_message(tmp_path: Path) -> None:
    """stashd exits 10 and names the path when it cannot create the database."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    done = subprocess.run(
        [sys.executable, "-m", "stashd", "--port", "0", "--db", str(blocker / "x.db")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == STORE_UNAVAILABLE
    assert f"stashd: cannot open the database {blocker / 'x.db'}" in done.stderr


def test_the_default_database_lives_in_the_user_data_directory(tmp_path: Path) -> None:
    """Without --db the file goes to the platform's data directory, folders created."""
    home = tmp_path / "home"
    env = {"HOME": str(home), "XDG_DATA_HOME": str(home / "data"), "STASH_DB": ""}
    with StashDaemon(env=env) as d:
        redis.Redis(port=d.port).set("k", "v")
    assert (home / "data" / "stash" / "stash.db").is_file()
    assert integrity(home / "data" / "stash" / "stash.db") == [("ok",)]
