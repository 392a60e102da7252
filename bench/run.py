"""Benchmarks that print ratios against an anchor measured in the same run.

Suite ``memory``: stashd on the memory backend against a redis-server without
persistence, each measured by ``redis-benchmark -c 50 -t set,get`` at -P 1 and -P 16,
alternating anchor and subject for several rounds and taking medians.
"""

from __future__ import annotations

import argparse
import csv
import io
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.servers import RedisServer, StashDaemon

TARGETS = {("memory", 1): 0.9, ("memory", 16): 0.6}


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


def measure(port: int, pipeline: int, requests: int) -> dict[str, float]:
    """One redis-benchmark run against ``port``."""
    done = subprocess.run(
        [
            "redis-benchmark",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-c",
            "50",
            "-n",
            str(requests),
            "-t",
            "set,get",
            "-P",
            str(pipeline),
            "--csv",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return parse_csv(done.stdout)


def main() -> int:
    """Run the suites and print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--quick", action="store_true", help="20k requests, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.requests = 1, 20_000
    if shutil.which("redis-benchmark") is None:
        print("skipped: redis-benchmark is not on PATH")
        return 0
    rows = []
    with RedisServer() as anchor, StashDaemon("--backend", "memory") as subject:
        for pipeline in (1, 16):
            a: dict[str, list[float]] = {"SET": [], "GET": []}
            s: dict[str, list[float]] = {"SET": [], "GET": []}
            for _ in range(args.rounds):
                for name, rps in measure(anchor.port, pipeline, args.requests).items():
                    a.setdefault(name, []).append(rps)
                for name, rps in measure(subject.port, pipeline, args.requests).items():
                    s.setdefault(name, []).append(rps)
            for test in ("SET", "GET"):
                ar, sr = statistics.median(a[test]), statistics.median(s[test])
                target = TARGETS[("memory", pipeline)]
                rows.append(("memory", test, pipeline, ar, sr, sr / ar, target))
    print(
        f"{'suite':8} {'test':4} {'-P':>3} {'anchor rps':>12} {'stashd rps':>12} {'ratio':>6} {'target':>6}"
    )
    for suite, test, p, ar, sr, ratio, target in rows:
        verdict = "PASS" if ratio >= target else "MISS"
        print(
            f"{suite:8} {test:4} {p:>3} {ar:>12.0f} {sr:>12.0f} {ratio:>6.2f} {target:>6.2f} {verdict}"
        )
    misses = sum(1 for r in rows if r[5] < r[6])
    print(f"summary: {len(rows) - misses} of {len(rows)} targets met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
