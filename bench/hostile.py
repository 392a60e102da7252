"""Hostile clients at full size: the RESP fuzzer and slowloris, run by hand, not in CI.

- ``fuzz``: tests/support/resp_fuzz.py's campaign against every setup of
  tests/test_fuzz_resp.py (memory and SQLite, open and strict mode, and memory with
  per-write log events off), ``--frames`` (1,000,000) shared among them, four sessions
  at a time; a control client PINGs from a process of its own every 10 ms throughout.
- ``slowloris``: tests/support/slowloris.py on its three doors (RESP before AUTH in
  strict mode, RESP in open mode, HTTP), ``--conns`` (1,000) connections each, while
  PING and ``GET /healthz`` are timed the same way.

The anchor of every round trip figure is the same probe against the same daemon
configuration left idle for ``--idle-seconds``, measured in the same run: the ratio is
what the attack costs a well-behaved client. Failures, log problems and exit codes are
printed as the tests would assert them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.resp_fuzz import FuzzRun, campaign_daemon, fuzz
from tests.support.slowloris import SlowRun, slowloris
from tests.support.watched import Latencies, Probe, WatchedDaemon, raise_fd_limit
from tests.test_fuzz_resp import SEED, SETUPS

DOORS = ("resp-preauth", "resp-open", "http")


def idle(port: int, key: str | None, seconds: float, door: str = "resp") -> Latencies:
    """The probe's round trips against a daemon nothing else talks to."""
    with Probe(door, port, key=key) as probe:
        time.sleep(seconds)  # the measurement window itself
        return probe.finish()


def ms(seconds: float) -> str:
    """Seconds as milliseconds, one decimal."""
    return f"{seconds * 1000:.1f}"


def ratio(attacked: float, quiet: float) -> str:
    """``attacked / quiet`` with two decimals, or ``-`` without an anchor."""
    return f"{attacked / quiet:.2f}" if quiet > 0 else "-"


def run_fuzz(frames: int, seed: int, idle_seconds: float) -> int:
    """The fuzz suite: one row per setup; the number of setups with problems."""
    rows: list[tuple[FuzzRun, Latencies]] = []
    for i, setup in enumerate(SETUPS):
        with campaign_daemon(setup) as (daemon, keys):
            quiet = idle(daemon.port, keys.get("probe"), idle_seconds)
        run = fuzz(setup, frames // len(SETUPS), seed + i, timeout=5.0, max_failures=10**9)
        print(run.summary(), flush=True)
        for failure in run.tally.failures[:5]:
            print(failure.render(600))
        for line in run.log_problems[:10]:
            print("  log:", line[:500])
        rows.append((run, quiet))
    print()
    print(
        f"{'setup':22} {'frames':>8} {'sessions':>8} {'seconds':>8} {'frames/s':>8}"
        f" {'p50 ms':>7} {'p99 ms':>7} {'idle p99':>8} {'ratio':>6} {'max ms':>7}"
        f" {'RSS MiB':>12} {'problems':>8}"
    )
    bad = 0
    for run, quiet in rows:
        t, lat = run.tally, run.latencies
        problems = t.failed + len(run.log_problems) + (run.exit_code != 0)
        problems += len(lat.failures)
        bad += problems > 0
        rss = f"{run.rss_start_kib // 1024}->{run.peak_rss_kib // 1024}"
        print(
            f"{run.setup.label:22} {t.frames:>8} {t.sessions:>8} {run.seconds:>8.1f}"
            f" {t.frames / max(run.seconds, 1e-9):>8.0f} {ms(lat.p50):>7} {ms(lat.p99):>7}"
            f" {ms(quiet.p99):>8} {ratio(lat.p99, quiet.p99):>6} {ms(lat.worst):>7}"
            f" {rss:>12} {problems:>8}"
        )
    return bad


def run_slowloris(conns: int, hold: float, idle_seconds: float) -> int:
    """The slowloris suite: one row per door; the number of doors with problems."""
    with WatchedDaemon("--backend", "memory") as daemon:
        quiet_resp = idle(daemon.port, None, idle_seconds)
        quiet_http = idle(daemon.http_port, None, idle_seconds, "http")
    rows: list[SlowRun] = []
    for door in DOORS:
        run = slowloris(door, conns, hold=hold)
        print(run.summary(), flush=True)
        for line in run.log_problems[:10]:
            print("  log:", line[:500])
        rows.append(run)
    print()
    print(
        f"{'door':13} {'conns':>6} {'closed':>7} {'after s':>10} {'seconds':>8}"
        f" {'PING p50/p99':>13} {'ratio':>6} {'healthz p50/p99':>16} {'ratio':>6}"
        f" {'RSS MiB':>14} {'problems':>8}"
    )
    bad = 0
    for run in rows:
        t = run.trickle
        life = sorted(t.since_first_byte if run.door == "http" else t.lifetimes)
        after = f"{life[0]:.1f}-{life[-1]:.1f}" if life else "-"
        problems = len(run.log_problems) + (run.exit_code != 0) + t.refused
        problems += len(run.resp.failures) + len(run.http.failures)
        bad += problems > 0
        rss = f"{run.rss_start_kib // 1024}/{run.rss_max_kib // 1024}/{run.rss_end_kib // 1024}"
        print(
            f"{run.door:13} {t.opened:>6} {len(life):>7} {after:>10} {run.seconds:>8.1f}"
            f" {ms(run.resp.p50) + '/' + ms(run.resp.p99):>13}"
            f" {ratio(run.resp.p99, quiet_resp.p99):>6}"
            f" {ms(run.http.p50) + '/' + ms(run.http.p99):>16}"
            f" {ratio(run.http.p99, quiet_http.p99):>6} {rss:>14} {problems:>8}"
        )
    print(
        f"idle anchor: PING p50/p99 {ms(quiet_resp.p50)}/{ms(quiet_resp.p99)} ms, "
        f"GET /healthz {ms(quiet_http.p50)}/{ms(quiet_http.p99)} ms"
    )
    return bad


def main() -> int:
    """Run the suites and print the tables."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--suite", choices=("fuzz", "slowloris", "all"), default="all")
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--conns", type=int, default=1000)
    parser.add_argument("--hold", type=float, default=20.0, help="open-mode RESP hold, s")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    args = parser.parse_args()
    raise_fd_limit()
    started = time.monotonic()
    bad = 0
    if args.suite in ("fuzz", "all"):
        bad += run_fuzz(args.frames, args.seed, args.idle_seconds)
    if args.suite in ("slowloris", "all"):
        print()
        bad += run_slowloris(args.conns, args.hold, args.idle_seconds)
    print(f"summary: {bad} runs with problems ({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
