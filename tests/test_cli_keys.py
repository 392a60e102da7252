"""The key and tier commands: stash keys create/list/revoke, stash tiers, and their errors."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from stashd.cli import stash_main, stashd_main
from stashd.cli_exit import STORE_UNAVAILABLE
from stashd.tenancy import KEY_LENGTH, well_formed

KEY_ID = re.compile(r"key_[0-9A-Za-z]{12}")


def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(stash_main, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def test_create_prints_the_key_alone_on_stdout(tmp_path: Path) -> None:
    """stdout is the key and nothing else; stderr says whose key it is and that it shows once."""
    db = str(tmp_path / "stash.db")
    code, out, err = _run("keys", "create", "--user", "alice", "--tier", "pro", "--db", db)
    assert code == 0
    key = out.strip()
    assert out == key + "\n"
    assert len(key) == KEY_LENGTH
    assert well_formed(key.encode())
    assert re.search(r"created key_\w{12} for user alice \(tier pro\)", err)
    assert "shown only this once" in err
    assert key not in err


def test_list_shows_users_tiers_ids_and_times_but_no_secret(tmp_path: Path) -> None:
    """Every key is listed with its user's tier and creation time; revocation shows too."""
    db = str(tmp_path / "stash.db")
    code, _, err = _run("keys", "list", "--db", db)
    assert code == 0
    assert "no keys yet" in err
    secrets = [_run("keys", "create", "--user", "alice", "--db", db)[1].strip() for _ in range(2)]
    secrets.append(_run("keys", "create", "--db", db)[1].strip())  # the default user
    code, out, _ = _run("keys", "list", "--db", db)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["user", "tier", "key", "id", "created", "revoked"]
    rows = [line.split() for line in lines[1:]]
    assert [(r[0], r[1]) for r in rows] == [
        ("alice", "free"),
        ("alice", "free"),
        ("default", "free"),
    ]
    assert all(KEY_ID.fullmatch(r[2]) for r in rows)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", r[3]) for r in rows)
    assert all(r[4] == "-" for r in rows)
    for secret in secrets:
        assert secret not in out
        assert secret[8:40] not in out
    code, out, _ = _run("keys", "revoke", rows[0][2], "--db", db)
    assert (code, out.strip()) == (0, f"revoked {rows[0][2]} (user alice)")
    code, out, _ = _run("keys", "revoke", rows[0][2], "--db", db)
    assert code == 0
    assert out.startswith(f"{rows[0][2]} (user alice) was already revoked at ")
    listed = _run("keys", "list", "--db", db)[1].splitlines()[1].split()
    assert re.fullmatch(r"\d{4}-.*Z", listed[4])


def test_tier_given_for_an_existing_user_moves_it(tmp_path: Path) -> None:
    """keys create --tier on an existing user says it moved the user."""
    db = str(tmp_path / "stash.db")
    _run("keys", "create", "--user", "bob", "--db", db)
    code, _, err = _run("keys", "create", "--user", "bob", "--tier", "enterprise", "--db", db)
    assert code == 0
    assert "user bob moved from tier free to enterprise" in err
    assert {line.split()[1] for line in _run("keys", "list", "--db", db)[1].splitlines()[1:]} == {
        "enterprise"
    }


def test_stash_db_env_names_the_file(tmp_path: Path) -> None:
    """Without --db the file comes from STASH_DB, as for the daemon."""
    db = tmp_path / "from-env.db"
    code, _, _ = _run("keys", "create", env={"STASH_DB": str(db)})
    assert code == 0
    assert db.exists()


def test_mistakes_are_named_and_change_nothing(tmp_path: Path) -> None:
    """Bad user names, unknown tiers and key ids, and unusable files each exit non-zero."""
    db = str(tmp_path / "stash.db")
    code, _, err = _run("keys", "create", "--user", "no spaces", "--db", db)
    assert code == 2
    assert "got 'no spaces'" in err
    code, _, err = _run("keys", "create", "--tier", "gold", "--db", db)
    assert code == 2
    assert "'gold' is not one of 'free', 'pro', 'enterprise'" in err
    code, _, err = _run("keys", "revoke", "key_doesnotexist", "--db", db)
    assert code == 1
    assert "no key with id 'key_doesnotexist'" in err
    assert _run("keys", "list", "--db", db)[2].startswith("no keys yet")
    (tmp_path / "junk.db").write_bytes(b"not a database" * 200)
    code, _, err = _run("keys", "list", "--db", str(tmp_path / "junk.db"))
    assert code == 1
    assert "junk.db" in err
    code, _, err = _run("keys", "list", env={"STASH_PORT": "eighty"})
    assert code == 2
    assert "STASH_PORT must be an integer" in err


def test_tiers_prints_the_resolved_table(tmp_path: Path) -> None:
    """stash tiers shows defaults, a --tiers file over them and STASH_TIER_* over both."""
    code, out, _ = _run("tiers")
    assert code == 0
    assert "free        1 MiB        1 h          1 h      60/min burst 10" in out
    tiers = tmp_path / "tiers.toml"
    tiers.write_text('[free]\nrate = "120/min"\nburst = 20\n[pro]\nmax_ttl = 172800\n')
    code, out, _ = _run("tiers", "--tiers", str(tiers), env={"STASH_TIER_FREE_BURST": "5"})
    assert code == 0
    assert "120/min burst 5" in out
    assert "pro         50 MiB       24 h         2 d" in out
    code, _, err = _run("tiers", env={"STASH_TIER_PRO_RATE": "often"})
    assert code == 2
    assert "STASH_TIER_PRO_RATE: rate must look like 600/min" in err


def test_strict_daemon_on_an_unusable_registry_exits_with_the_reason(tmp_path: Path) -> None:
    """stashd --auth keys with a file that is not a database says so and exits 10."""
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database" * 200)
    result = CliRunner().invoke(stashd_main, ["--auth", "keys", "--db", str(junk), "--port", "0"])
    assert result.exit_code == STORE_UNAVAILABLE
    assert "junk.db" in result.stderr
