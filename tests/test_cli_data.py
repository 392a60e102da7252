"""The data commands of ``stash``: JSON on stdout, errors on stderr, an exit code per error class.

Most run in-process (click's runner) on a SQLite file; the remote ones against a stashd
this module starts, and one pipeline through a real shell to show stdout pipes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from stashd import errors
from stashd.cli import stash_main
from stashd.cli_data import EXIT_CODES, NOT_FOUND, exit_code
from stashd.cli_exit import USAGE
from stashd.store.base import StoreOpenError
from tests.support.servers import StashDaemon, free_port


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No STASH_* variable or .env file of the machine running the tests leaks in."""
    for name in [n for n in os.environ if n.startswith("STASH_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def db(tmp_path: Path) -> str:
    """The SQLite file of one test."""
    return str(tmp_path / "cli.db")


def run(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> tuple[int, str, str]:
    """Run ``stash ARGS`` in-process: (exit code, stdout, stderr)."""
    result = CliRunner().invoke(stash_main, list(args), env=env, input=stdin)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_set_get_ttl_and_ls(db: str) -> None:
    """set prints nothing; get prints compact JSON; ttl the seconds; ls the keys."""
    assert run("set", "plan", '{"step": 1, "of": 3}', "--ttl", "600", "--db", db) == (0, "", "")
    assert run("get", "plan", "--db", db) == (0, '{"step":1,"of":3}\n', "")
    code, out, _ = run("ttl", "plan", "--db", db)
    assert code == 0
    assert int(out) in (599, 600)
    run("set", "task:1", "null", "--db", db)
    run("set", "task:2", '"text"', "--db", db)
    assert run("get", "task:1", "--db", db) == (0, "null\n", "")  # a stored null is found
    assert run("ls", "--db", db)[1].splitlines() == ["plan", "task:1", "task:2"]
    assert run("ls", "task:*", "--db", db)[1].splitlines() == ["task:1", "task:2"]


def test_json_from_stdin(db: str) -> None:
    """A JSON argument of - is read from stdin, for pipes."""
    assert run("set", "state", "-", "--db", db, stdin='{"from": "stdin"}\n')[0] == 0
    assert run("get", "state", "--db", db)[1] == '{"from":"stdin"}\n'
    code, out, _ = run("stash", "-", "--db", db, stdin="[1, 2]")
    assert code == 0
    assert run("recall", out.strip(), "--db", db)[1] == "[1,2]\n"


def test_stash_recall_update_forget(db: str) -> None:
    """The id alone on stdout; --meta as the HTTP API shows it; update prints seconds left."""
    code, out, _ = run("stash", '{"task": "summarize"}', "--ttl", "3600", "--db", db)
    assert code == 0
    memory_id = out.strip()
    assert re.fullmatch(r"[0-9A-Za-z]{8}", memory_id)
    assert run("recall", memory_id, "--db", db) == (0, '{"task":"summarize"}\n', "")
    code, out, _ = run(
        "update", memory_id, "--merge", '{"progress": 0.5}', "--extend", "600", "--db", db
    )
    assert code == 0
    assert int(out) in (4199, 4200)
    meta = json.loads(run("recall", memory_id, "--meta", "--db", db)[1])
    assert meta["memory_id"] == memory_id
    assert meta["data"] == {"task": "summarize", "progress": 0.5}
    assert meta["ttl_remaining"] in (4199, 4200)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["expires_at"])
    assert meta["version"] == 2
    code, out, _ = run(
        "update", memory_id, "--data", '{"done": true}', "--if-version", "2", "--db", db
    )
    assert code == 0
    assert run("recall", memory_id, "--db", db)[1] == '{"done":true}\n'
    run("set", "plan", "1", "--db", db)
    assert run("forget", memory_id, "plan", "missing", "--db", db) == (0, "2\n", "")
    assert run("ls", "--db", db) == (0, "", "")


def test_missing_keys_exit_1_with_nothing_on_stdout(db: str) -> None:
    """get, recall, ttl and update of a missing key: exit 1, a note on stderr only."""
    assert run("set", "other", "1", "--db", db)[0] == 0
    for args in (
        ["get", "nope"],
        ["recall", "nope"],
        ["recall", "nope", "--meta"],
        ["ttl", "nope"],
        ["update", "nope", "--extend", "5"],
    ):
        code, out, err = run(*args, "--db", db)
        assert (code, out) == (NOT_FOUND, ""), args
        assert "'nope' (missing or expired)" in err
    assert run("forget", "nope", "--db", db) == (0, "0\n", "")


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            ["set", "k", "{bad"],
            7,
            "stash: NOTJSON value is not valid JSON: Expecting property name",
        ),
        (["update", "k", "--merge", "[1,"], 7, "stash: NOTJSON merge patch is not valid JSON"),
        (["set", "k", "1", "--ttl", "0"], USAGE, "stash: ttl must be a positive number of seconds"),
        (
            ["set", "k", "1", "--ttl", "90000"],
            6,
            "stash: BADTTL ttl 90000 seconds exceeds the maximum of 86400 seconds",
        ),
        (["update", "k", "--extend", "90000"], 6, "stash: BADTTL"),
        (
            ["update", "k"],
            USAGE,
            "stash: ERR stash update needs at least one of --data, --merge or --extend",
        ),
        (
            ["update", "k", "--data", "1", "--merge", "2"],
            USAGE,
            "stash: ERR --data and --merge cannot",
        ),
        (
            ["update", "k", "--data", "2", "--if-version", "9"],
            8,
            "stash: CONFLICT version is 1, IFVERSION expected 9",
        ),
        (
            ["set", "k", '"' + "x" * 2_000_000 + '"'],
            5,
            "stash: TOOLARGE value is 2000002 bytes, the limit is 1048576 bytes",
        ),
        (["set", "k"], USAGE, "Missing argument 'JSON'"),
        (["forget"], USAGE, "Missing argument 'ID...'"),
        (["set", "k", "1", "--ttl", "soon"], USAGE, "'soon' is not a valid integer"),
    ],
)
def test_each_error_class_has_its_exit_code(
    db: str, args: list[str], code: int, message: str
) -> None:
    """Errors go to stderr with their wire text, and the exit code of their class."""
    run("set", "k", "1", "--db", db)
    got, out, err = run(*args, "--db", db)
    assert (got, out) == (code, "")
    assert message in err
    assert run("get", "k", "--db", db)[1] == "1\n"  # nothing changed


def test_a_stored_value_that_is_not_json_exits_7(db: str) -> None:
    """A value SET raw over RESP is reported, not printed half-understood."""
    _raw_set(db, b"raw", b"\xff")
    code, out, err = run("get", "raw", "--db", db)
    assert (code, out) == (7, "")
    assert "stash: NOTJSON stored value is not valid JSON: invalid UTF-8 at byte 0" in err


def _raw_set(db: str, key: bytes, value: bytes) -> None:
    """Write bytes as SET over RESP would, bypassing the client's JSON."""
    from stashd.service import MemoryService  # noqa: PLC0415
    from stashd.store.sqlite import SQLiteStore  # noqa: PLC0415
    from stashd.tenancy import DEFAULT_NAMESPACE  # noqa: PLC0415
    from stashd.types import Limits, Principal  # noqa: PLC0415

    store = SQLiteStore(db)
    who = Principal(DEFAULT_NAMESPACE, Limits(100, 60_000, 60_000))
    store.run(MemoryService(store).set(who, key, value))
    store.close_threads()


def test_text_that_cannot_be_utf8_is_printed_escaped(db: str) -> None:
    """A lone surrogate (a JSON escape in the stored text) prints as that escape: still JSON."""
    code, _, err = run("set", "odd", '"\\ud800"', "--db", db)
    assert code == USAGE  # such a string cannot be written as UTF-8
    assert "surrogates not allowed" in err
    _raw_set(db, b"odd", b'"\\ud800 and \\u00fc"')
    code, out, _ = run("get", "odd", "--db", db)
    assert (code, out) == (0, '"\\ud800 and \\u00fc"\n')
    assert json.loads(out) == "\ud800 and \u00fc"


def test_the_exit_code_table_covers_every_error_class() -> None:
    """Every error class maps to a code; distinct classes the README names, distinct codes."""
    assert exit_code(errors.WrongPass()) == exit_code(errors.NoAuth()) == 4
    assert exit_code(errors.PayloadTooLarge(1, 2)) == 5
    assert exit_code(errors.InvalidTTL(2, 1)) == 6
    assert exit_code(errors.StoredNotJSON("x")) == exit_code(errors.NotJSON("x")) == 7
    assert exit_code(errors.Conflict(2, 1)) == 8
    assert exit_code(errors.RateLimited(5)) == 9
    assert exit_code(errors.StoreUnavailable("x")) == exit_code(StoreOpenError("x")) == 10
    assert exit_code(errors.EmptyUpdate()) == exit_code(ValueError("x")) == USAGE
    weird = errors.StashError("odd")
    weird.code = "WRONGTYPE"
    assert exit_code(weird) == 3
    named = (
        errors.AuthenticationError,
        errors.PayloadTooLarge,
        errors.InvalidTTL,
        errors.NotJSON,
        errors.Conflict,
        errors.RateLimited,
        errors.StoreUnavailable,
    )
    codes = [code for kind, code in EXIT_CODES if kind in named]
    assert len(codes) == len(named) == len(set(codes))
    assert not set(codes) & {0, NOT_FOUND, USAGE, 3}


def test_bad_settings_and_unusable_files_are_reported(tmp_path: Path, db: str) -> None:
    """A broken setting is usage (2); a file that cannot be opened is unavailable (10)."""
    code, _, err = run("get", "k", "--db", db, env={"STASH_MAX_TTL": "forever"})
    assert (code, err) == (USAGE, "stash: STASH_MAX_TTL must be an integer, got 'forever'\n")
    (tmp_path / "dir.db").mkdir()
    code, _, err = run("get", "k", "--db", str(tmp_path / "dir.db"))
    assert code == 10
    assert "cannot open the database" in err
    code, _, err = run("get", "k", "--db", db, "--url", "redis://127.0.0.1:6380")
    assert code == USAGE
    assert "give one kind" in err


def test_read_commands_never_create_the_database(tmp_path: Path) -> None:
    """get, recall, ttl and ls of a missing file: exit 10 naming it, and nothing created."""
    missing = tmp_path / "no" / "such" / "dir" / "x.db"
    for args in (["get", "k"], ["recall", "k"], ["recall", "k", "--meta"], ["ttl", "k"], ["ls"]):
        code, out, err = run(*args, "--db", str(missing))
        assert (code, out) == (10, ""), args
        assert err == f"stash: the database {missing} does not exist\n", args
    assert not (tmp_path / "no").exists()
    # A write still creates the folders and the file, and reads then find it.
    assert run("set", "k", "1", "--db", str(missing)) == (0, "", "")
    assert run("get", "k", "--db", str(missing)) == (0, "1\n", "")


def test_no_options_mean_stash_db_or_stash_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without options the file is STASH_DB, unless STASH_URL names a daemon."""
    monkeypatch.setenv("STASH_DB", str(tmp_path / "env.db"))
    monkeypatch.setenv("STASH_BACKEND", "memory")  # ignored: the CLI keeps its data in the file
    assert run("set", "k", "1")[0] == 0
    assert run("get", "k", "--db", str(tmp_path / "env.db"))[1] == "1\n"
    port = free_port()
    code, _, err = run("get", "k", env={"STASH_URL": f"redis://127.0.0.1:{port}"})
    assert code == 10
    assert f"cannot reach redis://127.0.0.1:{port}" in err


# -- remote ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def daemon() -> Iterator[StashDaemon]:
    """A stashd for the remote commands, rate limited so that RATELIMIT can be met."""
    with StashDaemon("--no-http", "--rate-limit", "8/min", "--rate-burst", "8") as d:
        yield d


def test_remote_commands_use_the_keys_namespace(daemon: StashDaemon) -> None:
    """--url and --api-key (or STASH_URL / STASH_API_KEY) reach a daemon, in the key's namespace."""
    url = f"redis://127.0.0.1:{daemon.port}"
    assert run("set", "plan", '{"remote": true}', "--url", url, "--api-key", "cli-alice") == (
        0,
        "",
        "",
    )
    assert run("get", "plan", "--url", url, "--api-key", "cli-alice")[1] == '{"remote":true}\n'
    env = {"STASH_URL": url, "STASH_API_KEY": "cli-alice"}
    assert run("ls", env=env)[1] == "plan\n"
    assert run("get", "plan", env={"STASH_URL": url})[0] == NOT_FOUND  # another namespace


def test_remote_rate_limit_exits_9(daemon: StashDaemon) -> None:
    """Past the daemon's rate, RATELIMIT with the wait, exit 9."""
    url = f"redis://127.0.0.1:{daemon.port}"
    codes = [run("ttl", "k", "--url", url, "--api-key", "cli-limited")[0] for _ in range(9)]
    assert codes[:8] == [NOT_FOUND] * 8
    code, _, err = run("ttl", "k", "--url", url, "--api-key", "cli-limited")
    assert code == 9
    assert re.search(r"stash: RATELIMIT rate limit exceeded, retry after \d+ ms", err)


def test_remote_refused_key_exits_4() -> None:
    """A strict daemon refuses an unregistered key: WRONGPASS, exit 4."""
    with StashDaemon("--no-http", "--auth", "keys") as strict:
        code, out, err = run(
            "get", "k", "--url", f"redis://127.0.0.1:{strict.port}", "--api-key", "nope"
        )
    assert (code, out) == (4, "")
    assert err == "stash: WRONGPASS the API key was refused: check --api-key or STASH_API_KEY\n"


def test_remote_without_a_key_says_how_to_give_one() -> None:
    """A strict daemon and no key: the CLI says which flag or variable gives one, exit 4."""
    with StashDaemon("--no-http", "--auth", "keys") as strict:
        code, out, err = run("get", "k", "--url", f"redis://127.0.0.1:{strict.port}")
    assert (code, out) == (4, "")
    assert err == (
        "stash: NOAUTH this daemon needs an API key: pass --api-key or set STASH_API_KEY\n"
    )


def test_stdout_pipes_into_other_programs(db: str) -> None:
    """A real shell: an id captured with $(...), JSON piped into a JSON parser."""
    stash = shutil.which("stash", path=str(Path(sys.executable).parent))
    assert stash is not None
    script = (
        f'ID=$("{stash}" stash \'{{"task": "pipe"}}\' --db "$DB") && '
        f'"{stash}" recall "$ID" --meta --db "$DB" | "{sys.executable}" -c '
        "\"import json, sys; print(json.load(sys.stdin)['data']['task'])\""
    )
    done = subprocess.run(
        ["/bin/sh", "-c", script],
        env={**os.environ, "DB": db},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "pipe\n", "")
