"""Start-up failures of ``python -m stashd`` end in one line naming the fix, never a traceback."""

from __future__ import annotations

import os
import pty
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from stashd.app import connect_hint
from stashd.cli_exit import CANNOT_LISTEN, STORE_UNAVAILABLE
from tests.support.servers import free_port


@pytest.fixture
def taken() -> Iterator[int]:
    """A port some other program is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def start(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the daemon until it exits, at its default log level, as ``make run`` does."""
    return subprocess.run(
        [sys.executable, "-m", "stashd", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one line the daemon printed, after checking there is no traceback."""
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("stashd: ")
    return lines[0]


def test_a_busy_resp_port_names_the_port_and_the_setting(taken: int, tmp_path: Path) -> None:
    """RESP on a port in use: one line with the port, --port and STASH_PORT; exit 11."""
    done = start("--port", str(taken), "--no-http", "--db", str(tmp_path / "s.db"))
    assert done.returncode == CANNOT_LISTEN
    line = one_line(done)
    assert str(taken) in line
    assert "--port" in line
    assert "STASH_PORT" in line


def test_a_busy_http_port_names_the_port_and_both_ways_out(taken: int, tmp_path: Path) -> None:
    """HTTP on a port in use: one line with the port, --http-port, STASH_HTTP_PORT, --no-http."""
    done = start("--port", "0", "--http-port", str(taken), "--db", str(tmp_path / "s.db"))
    assert done.returncode == CANNOT_LISTEN
    line = one_line(done)
    for word in (str(taken), "--http-port", "STASH_HTTP_PORT", "--no-http"):
        assert word in line


def test_a_database_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    """--db under a regular file (no directory can be made there, even as root): exit 10."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    done = start("--port", "0", "--no-http", "--db", str(blocker / "s.db"))
    assert done.returncode == STORE_UNAVAILABLE
    assert str(blocker) in one_line(done)


def test_a_bad_tiers_file_is_one_line(tmp_path: Path) -> None:
    """A --tiers file that is not TOML: one line naming the file, exit 2 (usage)."""
    tiers = tmp_path / "tiers.toml"
    tiers.write_text("garbage [[\n")
    db = str(tmp_path / "s.db")
    done = start("--port", "0", "--no-http", "--db", db, "--auth", "keys", "--tiers", str(tiers))
    assert done.returncode == 2
    assert str(tiers) in one_line(done)


def test_redis_unreachable_is_one_line() -> None:
    """--backend redis with nothing listening: one line naming the URL, exit 10."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    done = start("--port", "0", "--no-http", "--backend", "redis", "--redis-url", url)
    assert done.returncode == STORE_UNAVAILABLE
    assert url in one_line(done)


def test_strict_mode_without_keys_on_a_busy_port_is_one_line(taken: int, tmp_path: Path) -> None:
    """What start-up opened (the file, the empty registry) is logged only once it listens."""
    db = str(tmp_path / "s.db")
    done = start("--port", str(taken), "--no-http", "--db", db, "--auth", "keys")
    assert done.returncode == CANNOT_LISTEN
    assert str(taken) in one_line(done)


def test_the_connect_hint_has_the_actual_ports() -> None:
    """A redis-cli and a curl command with the bound ports; a wildcard address is reached on loopback."""
    assert connect_hint("127.0.0.1", 7001, 7002) == (
        "connect with: redis-cli -p 7001  or  curl http://127.0.0.1:7002/healthz"
    )
    assert connect_hint("0.0.0.0", 7001, None) == "connect with: redis-cli -p 7001"  # noqa: S104 - a listening address, not bound here
    assert connect_hint("10.0.0.5", 7001, None) == "connect with: redis-cli -h 10.0.0.5 -p 7001"


def test_a_terminal_is_told_once_how_to_connect(tmp_path: Path) -> None:
    """On a terminal (make run), the daemon prints the connect line once, with its ports."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "stashd", "--port", "0", "--http-port", "0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=follower,
        env={**os.environ, "STASH_DB": str(tmp_path / "s.db")},
    )
    os.close(follower)
    seen = b""
    try:
        while b"connect with:" not in seen or not seen.rstrip(b"\r\n").endswith(b"healthz"):
            chunk = os.read(leader, 4096)
            assert chunk, seen
            seen += chunk
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        os.close(leader)
    text = seen.decode(errors="replace")
    assert text.count("connect with:") == 1
    assert "listening" in text
    assert "redis-cli -p " in text
    assert "curl http://127.0.0.1:" in text


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("ssl_ca_certs={missing}", "ssl_ca_certs {missing}"),
        ("ssl_ca_certs={garbage}", "ssl_ca_certs {garbage}"),
        ("ssl_certfile={missing}", "ssl_certfile/ssl_keyfile {missing}"),
    ],
)
def test_a_tls_file_that_cannot_be_read_is_one_line(query: str, named: str, tmp_path: Path) -> None:
    """A rediss:// certificate or key that is missing or not PEM: one line naming it, exit 2."""
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    files = {"missing": str(tmp_path / "missing.pem"), "garbage": str(garbage)}
    url = f"rediss://127.0.0.1:{free_port()}/0?" + query.format(**files)
    done = start("--port", "0", "--no-http", "--backend", "redis", "--redis-url", url)
    assert done.returncode == 2
    assert named.format(**files) in one_line(done)
