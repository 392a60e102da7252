"""Slowloris: connections that send a request one byte at a time never take the server hostage.

Each case opens ``STASH_SLOWLORIS_CONNS`` connections (default 200; bench/hostile.py
uses 1,000) that trickle one byte each every 250 ms of a request that never ends: a
RESP ``SET`` whose value never arrives and an inline line with no newline, or HTTP
headers that never end and a body shorter than its Content-Length. Meanwhile a PING
client and a ``GET /healthz`` client (processes of their own) keep timing round trips,
and the daemon's RSS is sampled on every tick.

- Before AUTH in strict mode, the auth timeout (2 s here) closes every one of them.
- In open mode they may hang for as long as they like (Redis's default ``timeout 0``),
  held for ``STASH_SLOWLORIS_HOLD`` seconds (default 5), costing no one else anything.
- Over HTTP, the request deadline (9.5 s from the first byte, checked every 250 ms)
  answers each with a 408 and closes it.
"""

from __future__ import annotations

import os

import pytest

from tests.support.slowloris import HTTP_REQUEST_TIMEOUT, SlowRun, slowloris
from tests.support.watched import raise_fd_limit

CONNS = int(os.environ.get("STASH_SLOWLORIS_CONNS", "200"))
HOLD = float(os.environ.get("STASH_SLOWLORIS_HOLD", "5"))
AUTH_TIMEOUT = 2
# How late a timeout may close a connection on a loaded 2-core runner, and how slow the
# well-behaved clients' round trips may get there (the figures printed are far lower).
SLACK = 5.0
P99_BOUND = float(os.environ.get("STASH_PING_P99_BOUND_MS", "500")) / 1000
STALL = 5.0
# What the daemon may grow by: measured at about 5 MiB for 1,000 connections.
RSS_FIXED_KIB = 16 * 1024
RSS_PER_CONN_KIB = 48


@pytest.fixture(scope="module", autouse=True)
def _enough_file_descriptors() -> None:
    if raise_fd_limit() < CONNS + 200:
        pytest.skip(f"the open-file limit is below {CONNS + 200}: cannot open the connections")


def _check_everyone_else_was_served(run: SlowRun) -> None:
    print(run.summary())
    assert run.trickle.refused == 0
    if run.log_problems:
        pytest.fail("the daemon logged:\n" + "\n".join(run.log_problems), False)
    assert run.exit_code == 0
    for name, latencies in (("PING", run.resp), ("GET /healthz", run.http)):
        assert not latencies.failures, (name, latencies.failures[:5])
        assert latencies.rtts, f"no {name} round trip completed"
        assert latencies.p99 < P99_BOUND, (name, latencies.summary())
        assert latencies.worst < STALL, (name, latencies.summary())
    grown = run.rss_max_kib - run.rss_start_kib
    assert grown < RSS_FIXED_KIB + CONNS * RSS_PER_CONN_KIB, f"RSS grew by {grown} KiB"


@pytest.mark.slow
def test_unauthenticated_slow_clients_are_closed_by_the_auth_timeout() -> None:
    """Strict mode: every slow pre-AUTH connection is closed once --auth-timeout has passed."""
    run = slowloris("resp-preauth", CONNS, auth_timeout=AUTH_TIMEOUT)
    _check_everyone_else_was_served(run)
    assert run.trickle.still_open == 0
    lifetimes = run.trickle.lifetimes
    assert len(lifetimes) == CONNS
    assert min(lifetimes) >= AUTH_TIMEOUT - 0.1, "closed before the auth timeout"
    assert max(lifetimes) < AUTH_TIMEOUT + SLACK, f"closed after {max(lifetimes):.1f} s"
    assert run.trickle.answers == {b"": CONNS}, "closed without a reply, as the SPEC says"


@pytest.mark.slow
def test_slow_clients_in_open_mode_cost_everyone_else_nothing() -> None:
    """Open mode: slow connections stay as long as they like; PING and /healthz stay fast."""
    run = slowloris("resp-open", CONNS, hold=HOLD)
    _check_everyone_else_was_served(run)
    assert run.trickle.still_open == CONNS, "open mode has no idle timeout to close them"


@pytest.mark.slow
def test_slow_http_clients_are_cut_off_by_the_request_deadline() -> None:
    """HTTP: headers or a body that never finish get a 408 and a close by the 10th second."""
    run = slowloris("http", CONNS)
    _check_everyone_else_was_served(run)
    assert run.trickle.still_open == 0
    since = run.trickle.since_first_byte
    assert len(since) == CONNS
    assert min(since) >= HTTP_REQUEST_TIMEOUT - 0.1, "cut off before the deadline"
    assert max(since) < HTTP_REQUEST_TIMEOUT + 0.5 + SLACK, f"cut off after {max(since):.1f} s"
    assert run.trickle.answers == {b"HTTP/1.1 408 Request Timeout": CONNS}
