"""--max-clients is one count over RESP and HTTP; a client over it is answered, never reset.

Each daemon here is real (``python -m stashd``); its file limit is set with
``StashDaemon(fd_limit=...)``. A full daemon is watched through ``INFO clients`` on a
connection it already serves.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from stashd.admission import ClientSlots, Slot
from stashd.app import RESERVED_FDS
from tests.support.http import split_response
from tests.support.resp_client import RespClient
from tests.support.servers import StashDaemon, free_port

RESP_REFUSAL = b"-ERR max number of clients reached\r\n"
JSON_LOGS = {"STASH_LOG_FORMAT": "json"}
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"


def _served(port: int, refused: list[str] | None = None) -> RespClient:
    """A RESP connection that got PONG, retried while closed ones still hold their slots.

    Each refusal met on the way is added to ``refused``: the daemon logs those too.
    """
    deadline = time.monotonic() + 10
    while True:
        c = RespClient(port)
        reply = c.call("PING").render()
        if reply == "+PONG":
            return c
        if refused is not None:
            refused.append(reply)
        c.close()
        assert time.monotonic() < deadline, "no connection slot came free"
        time.sleep(0.02)


def _info_clients(c: RespClient) -> dict[str, str]:
    """The fields of INFO clients."""
    text = c.call("INFO", "clients").value.decode()
    return dict(line.split(":", 1) for line in text.split("\r\n") if ":" in line)


def _wait_for_clients(c: RespClient, count: int) -> None:
    """Wait until the daemon counts exactly ``count`` clients over both doors."""
    deadline = time.monotonic() + 10
    while (now := int(_info_clients(c)["connected_clients"])) != count:
        assert time.monotonic() < deadline, f"{now} clients, expected {count}"
        time.sleep(0.02)


def _until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes; a reset or a hang fails the test."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _resp_answer(port: int) -> bytes:
    """What a new RESP connection is sent before the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        return _until_closed(sock)


def _http_answer(port: int) -> tuple[int, dict[str, str], bytes]:
    """A GET /healthz on a new connection, read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        return split_response(_until_closed(sock))


def _idle_http(port: int, *, asked: bool) -> socket.socket:
    """An HTTP connection left open: fresh, or kept alive after one answered request."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    if asked:
        sock.sendall(HEALTHZ)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    return sock


def _assert_http_refused(answer: tuple[int, dict[str, str], bytes], limit: int) -> None:
    status, headers, body = answer
    assert status == 503
    assert headers["content-type"] == "application/json"
    assert headers["retry-after"] == "1"
    assert headers["connection"] == "close"
    assert json.loads(body) == {
        "error": {
            "code": "max_clients_reached",
            "message": "max number of clients reached",
            "limit": limit,
        }
    }


def _events(daemon: StashDaemon, name: str) -> list[dict[str, object]]:
    """The daemon's JSON log events of one name (read once it has stopped)."""
    events = [json.loads(line) for line in daemon.stderr.splitlines() if line.startswith("{")]
    return [e for e in events if e["event"] == name]


def test_one_count_over_both_doors() -> None:
    """20 clients of either door fill --max-clients 20; the 21st of each is told so, logged."""
    with StashDaemon(
        "--max-clients", "20", "--backend", "memory", env=JSON_LOGS, log_level="info"
    ) as daemon:
        early: list[str] = []  # refused while the startup probes still held slots
        keeper = _served(daemon.port, early)
        _wait_for_clients(keeper, 1)  # the startup probes have gone
        resp = [_served(daemon.port) for _ in range(4)]
        http = [_idle_http(daemon.http_port, asked=i % 3 == 0) for i in range(15)]
        _wait_for_clients(keeper, 20)
        info = _info_clients(keeper)
        assert info["maxclients"] == "20"
        assert keeper.call("CONFIG", "GET", "maxclients").render() == "[$'maxclients', $'20']"

        assert _resp_answer(daemon.port) == RESP_REFUSAL
        _assert_http_refused(_http_answer(daemon.http_port), 20)
        # A real HTTP client reads the 503, not a reset.
        refused = requests.get(daemon.http_url + "/healthz", timeout=5)
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "1"
        assert refused.json()["error"]["code"] == "max_clients_reached"
        assert keeper.call("PING").render() == "+PONG"  # the ones admitted are served

        for sock in http[:3]:
            sock.close()
        resp.pop().close()
        _wait_for_clients(keeper, 16)
        assert _served(daemon.port, early).call("GET", "nothing").render() == "(nil)"
        status, _, body = _http_answer(daemon.http_port)
        assert (status, json.loads(body)["status"]) == (200, "ok")
        daemon.stop()
    refusals = _events(daemon, "connection_refused")
    assert sum(int(e["refused"]) for e in refusals) == 3 + len(early)  # type: ignore[call-overload]
    assert {e["door"] for e in refusals} <= {"resp", "http"}
    assert refusals[0]["door"] == "resp"
    assert refusals[0]["level"] == "warning"
    assert refusals[0]["max_clients"] == 20
    assert str(refusals[0]["peer"]).startswith("127.0.0.1:")
    assert refusals[-1]["door"] == "http"
    (listening,) = _events(daemon, "listening")
    assert listening["max_clients"] == 20


def test_a_low_file_limit_lowers_max_clients_and_everyone_is_answered() -> None:
    """A hard limit of 100 leaves room for 36 clients; with 36 open, the rest get answers."""
    limit = 100 - RESERVED_FDS
    early: list[str] = []
    with StashDaemon("--max-clients", "500", env=JSON_LOGS, fd_limit=(100, 100)) as daemon:
        keeper = _served(daemon.port, early)
        _wait_for_clients(keeper, 1)
        assert _info_clients(keeper)["maxclients"] == str(limit)
        resp = [_served(daemon.port) for _ in range(limit // 2 - 1)]
        http = [
            _idle_http(daemon.http_port, asked=i % 2 == 0) for i in range(limit - len(resp) - 1)
        ]
        _wait_for_clients(keeper, limit)
        for i in range(60):
            if i % 2:
                _assert_http_refused(_http_answer(daemon.http_port), limit)
            else:
                assert _resp_answer(daemon.port) == RESP_REFUSAL
        # Those admitted are still served, and the store still has its descriptors.
        assert keeper.call("SET", "k", "v").render() == "+OK"
        assert keeper.call("GET", "k").render() == "$'v'"
        assert resp[-1].call("PING").render() == "+PONG"
        http[0].sendall(HEALTHZ)
        assert http[0].recv(65536).startswith(b"HTTP/1.1 200 ")
        daemon.stop()
    (reduced,) = _events(daemon, "max_clients_reduced")
    assert (reduced["requested"], reduced["max_clients"], reduced["fd_limit"]) == (500, limit, 100)
    assert f"maxclients has been reduced to {limit}" in str(reduced["hint"])
    refusals = _events(daemon, "connection_refused")
    assert sum(int(e["refused"]) for e in refusals) == 60 + len(early)  # type: ignore[call-overload]
    assert {e["reason"] for e in refusals} == {"max_clients"}  # never out of descriptors
    assert not _events(daemon, "accept_failed")


def test_the_soft_limit_is_raised_as_far_as_needed() -> None:
    """Soft 40 under hard 4096: raised to max-clients plus the reserve, and no further."""
    limits = Path("/proc/self/limits")
    if not limits.exists():
        pytest.skip("no /proc to read the daemon's limits from")
    with StashDaemon("--max-clients", "100", "--no-http", fd_limit=(40, 4096)) as daemon:
        keeper = _served(daemon.port)
        assert _info_clients(keeper)["maxclients"] == "100"
        text = Path(f"/proc/{daemon.pid}/limits").read_text()
    (line,) = [row for row in text.splitlines() if row.startswith("Max open files")]
    assert line.split()[3:5] == [str(100 + RESERVED_FDS), "4096"]


def test_no_room_for_one_client_refuses_to_start() -> None:
    """A hard limit below the reserve: stashd exits 2 and names the limit and the need."""
    import resource  # noqa: PLC0415 - POSIX only, like the daemon's own use

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "stashd",
            "--port",
            str(free_port()),
            "--no-http",
            "--backend=memory",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (50, 50)),  # noqa: PLW1509
    )
    assert done.returncode == 2, done.stderr
    assert (
        f"stashd: the open-file limit is 50, stashd needs at least {RESERVED_FDS + 1}"
        in done.stderr
    )


def test_a_flood_of_refusals_is_logged_a_few_times_with_counts() -> None:
    """200 refused connections: at most one event a second, whose counts add up to 200."""
    with StashDaemon(
        "--max-clients", "1", "--no-http", "--backend", "memory", env=JSON_LOGS
    ) as daemon:
        early: list[str] = []
        keeper = _served(daemon.port, early)
        started = time.monotonic()
        for _ in range(200):
            assert _resp_answer(daemon.port) == RESP_REFUSAL
        elapsed = time.monotonic() - started
        assert keeper.call("PING").render() == "+PONG"
        daemon.stop()
    refusals = _events(daemon, "connection_refused")
    assert sum(int(e["refused"]) for e in refusals) == 200 + len(early)  # type: ignore[call-overload]
    # One at the first refusal, one per second after it, and the rest at shutdown.
    assert len(refusals) <= elapsed + 2
    assert len(refusals) < 20


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=3, allow_nan=False), max_size=60))
def test_refusal_events_are_a_second_apart_and_lose_no_count(gaps: list[float]) -> None:
    """Whatever the timing of refusals: events at least a second apart, counts summing up."""
    now = [0.0]
    slots = ClientSlots(5, clock=lambda: now[0])
    times: list[float] = []
    with structlog.testing.capture_logs() as logs:
        for gap in gaps:
            now[0] += gap
            before = len(logs)
            slots.refused("resp", "127.0.0.1:5000")
            if len(logs) > before:
                times.append(now[0])
        slots.flush()
    events = [e for e in logs if e["event"] == "connection_refused"]
    assert sum(e["refused"] for e in events) == len(gaps)
    # As the rule reads it (no event before the last one plus the interval): a float
    # difference can fall short of it, 1.025 - 0.025 being just under 1.0.
    assert all(b >= a + 1.0 for a, b in zip(times, times[1:], strict=False))
    assert all(e["max_clients"] == 5 and e["log_level"] == "warning" for e in events)


@given(st.lists(st.sampled_from(["take", "release", "release-again"]), max_size=80))
def test_the_count_never_passes_the_limit(steps: list[str]) -> None:
    """Slots taken and given back in any order: never more than the limit, each back once."""
    slots = ClientSlots(3)
    held: list[Slot] = []
    for step in steps:
        if step == "take":
            slot = slots.take()
            assert (slot is None) == (len(held) == 3)
            if slot is not None:
                held.append(slot)
        elif held:
            slot = held.pop(0) if step == "release" else held[0]
            slot.release()
            if step == "release-again":
                slot.release()  # a second release changes nothing
                held.pop(0)
        assert slots.count == len(held)


def test_max_clients_below_one_is_refused() -> None:
    """The count refuses a limit that would admit nobody, naming the value."""
    with pytest.raises(ValueError, match="max_clients must be at least 1, got 0"):
        ClientSlots(0)
