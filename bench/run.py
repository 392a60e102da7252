"""Benchmarks that print ratios against an anchor measured in the same run.

Each suite starts stashd and its anchor, a redis-server configured the comparable way,
and measures both with ``redis-benchmark -c 50 -t set,get``, alternating anchor and
subject for several rounds and taking medians.

- ``memory``: stashd on the memory backend against redis-server without persistence,
  at -P 1 and -P 16.
- ``sqlite``: stashd on the SQLite backend (a file in a temporary directory) against
  redis-server with ``--appendonly yes --appendfsync everysec``, the comparable durable
  setup, at -P 1 and -P 16; then once more at -P 1 over 100,000 random keys
  (``-r 100000``), where writes land all over the table instead of on one row.
- ``redis``: stashd on the Redis backend against the very redis-server it stores in,
  used directly, at -P 1 (target 0.5x) and -P 16 (target 0.3x): what a node costs
  over talking to Redis yourself.
- ``http``: ``wrk`` against the HTTP sidecar and a bare aiohttp handler (bench/http_suite.py).
"""

from __future__ import annotations

import argparse
import csv
import io
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.daemon import daemon
from bench.http_suite import http_suite, print_http
from tests.support.servers import RedisServer, StashDaemon, free_port, wait_for_port


@dataclass(frozen=True)
class Case:
    """One measured configuration: pipeline depth, keyspace, and the targets (None: report)."""

    pipeline: int
    keyspace: int  # 0: redis-benchmark's default single key
    set_target: float | None
    get_target: float | None


SUITES: dict[str, tuple[Case, ...]] = {
    "memory": (Case(1, 0, 0.9, 0.9), Case(16, 0, 0.5, 0.5)),
    # No targets: how close any Python server gets, for reading the memory suite.
    "ceiling": (Case(1, 0, None, None), Case(16, 0, None, None)),
    "sqlite": (Case(1, 0, 0.5, 0.8), Case(16, 0, 0.3, 0.3), Case(1, 100_000, None, None)),
    "redis": (Case(1, 0, 0.5, 0.5), Case(16, 0, 0.3, 0.3)),
}
ANCHORS: dict[str, tuple[str, ...]] = {
    "memory": (),
    "ceiling": (),
    "sqlite": ("--appendonly", "yes", "--appendfsync", "everysec"),
    "redis": (),
}


def parse_csv(text: str) -> dict[str, float]:
    """Requests per second by test name from ``redis-benchmark --csv`` output."""
    rows = csv.reader(io.StringIO(text))
    out: dict[str, float] = {}
    for row in rows:
        if len(row) >= 2 and row[0] != "test":
            try:
                out[row[0]] = float(row[1])
            except ValueError:
                continue
    return out


def measure(port: int, case: Case, requests: int) -> dict[str, float]:
    """One redis-benchmark run against ``port``."""
    args = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", "50"]
    args += ["-n", str(requests), "-t", "set,get", "-P", str(case.pipeline), "--csv"]
    if case.keyspace:
        args += ["-r", str(case.keyspace)]
    done = subprocess.run(args, capture_output=True, text=True, check=True, timeout=600)
    return parse_csv(done.stdout)


class BareResp:
    """bench/bare_resp.py on a free port, for the ceiling suite."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        script = Path(__file__).resolve().parent / "bare_resp.py"
        self.proc = subprocess.Popen(
            [sys.executable, str(script), "--port", str(self.port)], stderr=subprocess.PIPE
        )
        wait_for_port(self.port, self.proc)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)


@dataclass(frozen=True)
class Row:
    """One line of the report."""

    suite: str
    test: str
    case: Case
    anchor: float
    stashd: float
    target: float | None

    @property
    def ratio(self) -> float:
        """stashd's requests per second over the anchor's."""
        return self.stashd / self.anchor

    @property
    def met(self) -> bool:
        """True when there is a target and the ratio reaches it."""
        return self.target is not None and self.ratio >= self.target


def run_suite(suite: str, rounds: int, requests: int) -> list[Row]:
    """Measure one suite; a row per test and case."""
    rows: list[Row] = []
    with RedisServer(*ANCHORS[suite]) as anchor, _subject(suite, anchor) as subject:
        for case in SUITES[suite]:
            a: dict[str, list[float]] = {"SET": [], "GET": []}
            s: dict[str, list[float]] = {"SET": [], "GET": []}
            for _ in range(rounds):
                for name, rps in measure(anchor.port, case, requests).items():
                    a.setdefault(name, []).append(rps)
                for name, rps in measure(subject.port, case, requests).items():
                    s.setdefault(name, []).append(rps)
            for test, target in (("SET", case.set_target), ("GET", case.get_target)):
                ar, sr = statistics.median(a[test]), statistics.median(s[test])
                rows.append(Row(suite, test, case, ar, sr, target))
    return rows


def _subject(suite: str, anchor: RedisServer) -> StashDaemon | BareResp:
    """stashd on the suite's backend (on ``redis``, stored in the anchor itself), or the
    bare Python server of the ceiling suite."""
    if suite == "ceiling":
        return BareResp()
    if suite == "redis":
        return daemon("--backend", "redis", "--redis-url", anchor.url, "--no-http")
    return daemon("--backend", suite, "--no-http")


def main() -> int:
    """Run the suites and print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--suite", choices=[*SUITES, "http", "all"], default="all")
    parser.add_argument(
        "--http-backend",
        choices=("memory", "sqlite", "all"),
        default="all",
        help="backend(s) for suite http; the target applies to both",
    )
    parser.add_argument("--http-seconds", type=int, default=5, help="wrk duration per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--quick", action="store_true", help="20k requests, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.requests, args.http_seconds = 1, 20_000, 3
    if args.suite in ("all", "http"):
        backends = ("memory", "sqlite") if args.http_backend == "all" else (args.http_backend,)
        for backend in backends:
            started = time.monotonic()
            results = http_suite(backend, args.rounds, args.http_seconds)
            misses = print_http(backend, results)
            if results:
                print(
                    f"summary http/{backend}: {len(results) - misses} of {len(results)} "
                    f"targets met ({time.monotonic() - started:.0f} s)"
                )
        if args.suite == "http":
            return 0
    if shutil.which("redis-benchmark") is None:
        print("skipped: redis-benchmark is not on PATH")
        return 0
    suites = list(SUITES) if args.suite == "all" else [args.suite]
    rows = [row for suite in suites for row in run_suite(suite, args.rounds, args.requests)]
    print(
        f"{'suite':8} {'test':4} {'-P':>3} {'keys':>8} {'anchor rps':>12} {'stashd rps':>12}"
        f" {'ratio':>6} {'target':>6}"
    )
    for row in rows:
        keys = f"{row.case.keyspace:,}" if row.case.keyspace else "1"
        if row.target is None:
            goal, verdict = "-", "report"
        else:
            goal, verdict = f"{row.target:.2f}", "PASS" if row.met else "MISS"
        print(
            f"{row.suite:8} {row.test:4} {row.case.pipeline:>3} {keys:>8} {row.anchor:>12.0f}"
            f" {row.stashd:>12.0f} {row.ratio:>6.2f} {goal:>6} {verdict}"
        )
    judged = [row for row in rows if row.target is not None]
    print(f"summary: {sum(row.met for row in judged)} of {len(judged)} targets met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
