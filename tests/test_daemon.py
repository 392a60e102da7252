"""The daemon as a process: settings precedence, protected mode, logs, signals, CLI help."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import click
import pytest
import redis
from click.testing import CliRunner

from stashd.cli import stash_main, stashd_main
from stashd.config import ConfigError, load
from tests.support.servers import StashDaemon, free_port


def test_flags_beat_env_beat_dotenv_beat_defaults(tmp_path: Path) -> None:
    """Each source wins over the next, setting by setting."""
    dotenv = tmp_path / ".env"
    dotenv.write_text("STASH_PORT=7001\nSTASH_DEFAULT_TTL=70\nSTASH_MAX_TTL=700\n")
    env = {"STASH_DEFAULT_TTL": "80", "STASH_MAX_TTL": "800"}
    config = load({"max_ttl": 900, "port": None}, env=env, dotenv_path=dotenv)
    assert config.port == 7001  # .env over the default
    assert config.default_ttl == 80  # env over .env
    assert config.max_ttl == 900  # flag over env
    assert config.host == "127.0.0.1"  # default


def test_bad_settings_name_the_setting_and_the_value(tmp_path: Path) -> None:
    """A setting that cannot be used is refused at start, naming what was given."""
    none = tmp_path / "missing.env"
    with pytest.raises(ConfigError, match="STASH_PORT must be an integer, got 'eighty'"):
        load(env={"STASH_PORT": "eighty"}, dotenv_path=none)
    with pytest.raises(ConfigError, match=r"default_ttl \(900\) must not exceed max_ttl \(60\)"):
        load({"default_ttl": 900, "max_ttl": 60}, env={}, dotenv_path=none)
    with pytest.raises(ConfigError, match="STASH_ALLOW_OPEN must be true or false, got 'maybe'"):
        load(env={"STASH_ALLOW_OPEN": "maybe"}, dotenv_path=none)


def test_dotenv_in_the_working_directory_is_read(tmp_path: Path) -> None:
    """A daemon started in a folder with a .env file takes its settings from it."""
    (tmp_path / ".env").write_text("STASH_DEFAULT_TTL=123\n")
    with StashDaemon(cwd=tmp_path) as daemon:
        r = redis.Redis(port=daemon.port)
        r.set("k", "v")
        assert r.ttl("k") in (122, 123)
        r.close()


def test_protected_mode_refuses_a_public_address_unless_allowed() -> None:
    """Open mode on a non-loopback address stops at start with the reason, exit code 2."""
    args = [sys.executable, "-m", "stashd", "--host", "0.0.0.0", "--port", str(free_port())]  # noqa: S104 - the address being refused
    done = subprocess.run(
        [*args, "--no-http"], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 2
    assert "refusing to listen on 0.0.0.0" in done.stderr
    assert "--allow-open" in done.stderr
    runner = CliRunner()
    result = runner.invoke(stashd_main, ["--host", "10.1.2.3", "--no-http"])
    assert result.exit_code == 2


def test_json_logs_name_each_write_without_its_payload() -> None:
    """One event per write with namespace, key or id, TTL and size; never the value."""
    with StashDaemon("--log-format", "json", log_level="info") as daemon:
        r = redis.Redis(port=daemon.port, password="alice-secret-key")
        r.set("plan", "TOPSECRETVALUE", ex=600)
        mid = r.execute_command("STASH", '{"note":"TOPSECRETJSON"}', "EX", 60).decode()
        r.execute_command("UPDATE", mid, "MERGE", '{"more":"TOPSECRETPATCH"}')
        r.execute_command("FORGET", mid)
        r.close()
        daemon.stop()
    events = [json.loads(line) for line in daemon.stderr.splitlines() if line.startswith("{")]
    by_name = {e["event"]: e for e in events}
    assert by_name["listening"]["port"] == daemon.port
    created = by_name["stash_created"]
    assert created["id"] == mid
    assert created["ttl_seconds"] in (59, 60)
    assert created["payload_bytes"] == len('{"note":"TOPSECRETJSON"}')
    assert created["namespace"] == by_name["key_set"]["namespace"] != "default"
    assert by_name["key_set"]["key"] == "plan"
    assert by_name["key_set"]["ttl_seconds"] in (599, 600)
    assert by_name["stash_updated"]["id"] == mid
    assert by_name["stash_forgotten"]["removed"] == 1
    assert "TOPSECRET" not in daemon.stderr
    assert "alice-secret-key" not in daemon.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_the_daemon_cleanly(sig: signal.Signals) -> None:
    """SIGTERM and SIGINT close connections and the store and exit 0."""
    daemon = StashDaemon(log_level="info")
    with daemon:
        r = redis.Redis(port=daemon.port)
        r.set("k", "v")
        assert daemon.stop(sig) == 0
    assert '"stopped"' in daemon.stderr or "stopped" in daemon.stderr


def _command_paths(group: click.Command, prefix: list[str]) -> list[list[str]]:
    """Every command under ``group``, groups included, as argument paths."""
    paths = [prefix]
    if isinstance(group, click.Group):
        for name, sub in group.commands.items():
            paths += _command_paths(sub, [*prefix, name])
    return paths


def test_every_cli_command_has_help_with_an_example() -> None:
    """stashd and each stash subcommand answer --help, and the help shows an example."""
    runner = CliRunner()
    result = runner.invoke(stashd_main, ["--help"])
    assert result.exit_code == 0
    assert "Example:" in result.output
    assert "\\b" not in result.output
    for path in _command_paths(stash_main, []):
        result = runner.invoke(stash_main, [*path, "--help"])
        assert result.exit_code == 0, path
        assert "Example:" in result.output, path
        assert "\\b" not in result.output, path  # click's marker is "\b", not r"\b"
