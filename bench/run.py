"""Benchmarks that print ratios against an anchor measured in the same run.

Suite ``memory``: stashd on the memory backend against a redis-server without
persistence, each measured by ``redis-benchmark -c 50 -t set,get`` at -P 1 and -P 16,
alternating anchor and subject for several rounds and taking medians.

Suite ``http``: ``wrk -c 50`` against stashd's HTTP sidecar (GET /recall/{id} and
POST /stash, on the backend named by ``--http-backend``) and against a bare aiohttp
handler returning the same JSON bodies (bench/bare_http.py), alternating, medians.
"""

from __future__ import annotations

import argparse
import csv
import io
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.servers import RedisServer, StashDaemon, free_port, wait_for_port

BENCH = Path(__file__).resolve().parent

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


# -- suite http ------------------------------------------------------------------------
HTTP_TARGET = 0.8
HTTP_KEY = "bench-key"  # the same key as bench/http_post.lua, so both tests use one namespace


def wrk(url: str, seconds: int, script: Path | None = None) -> float:
    """Requests per second of one ``wrk -t1 -c50`` run (one thread: the server has the other core)."""
    cmd = ["wrk", "-t1", "-c50", f"-d{seconds}s", "-H", f"X-API-KEY: {HTTP_KEY}"]
    if script is not None:
        cmd += ["-s", str(script)]
    done = subprocess.run(
        [*cmd, url], capture_output=True, text=True, check=True, timeout=seconds + 60
    )
    for line in done.stdout.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    msg = f"wrk printed no rate: {done.stdout} {done.stderr}"
    raise RuntimeError(msg)


def _http(method: str, url: str, body: bytes | None = None, key: str = HTTP_KEY) -> bytes:
    req = urllib.request.Request(url, data=body, method=method, headers={"X-API-KEY": key})
    with urllib.request.urlopen(req, timeout=10) as resp:
        data: bytes = resp.read()
        return data


def http_suite(backend: str, rounds: int, seconds: int) -> list[tuple[str, float, float]]:
    """(test, bare rps, stashd rps) for GET /recall and POST /stash; [] when wrk is missing."""
    if shutil.which("wrk") is None:
        print(
            "skipped suite http: wrk is not on PATH "
            "(install it with `apt-get install -y wrk`, see bench/README.md)"
        )
        return []
    post_body = (BENCH / "http_post.lua").read_text().split("wrk.body = '")[1].split("'")[0]
    results = []
    with StashDaemon("--backend", backend) as subject, tempfile.TemporaryDirectory() as tmp:
        base = subject.http_url
        created = _http("POST", f"{base}/stash", post_body.encode())
        memory_id = created.split(b'"memory_id":"')[1].split(b'"')[0].decode()
        recalled = _http("GET", f"{base}/recall/{memory_id}")
        (Path(tmp) / "recall.json").write_bytes(recalled)
        (Path(tmp) / "created.json").write_bytes(created)
        port = free_port()
        bare = subprocess.Popen(
            [
                sys.executable,
                str(BENCH / "bare_http.py"),
                "--port",
                str(port),
                "--recall",
                str(Path(tmp) / "recall.json"),
                "--created",
                str(Path(tmp) / "created.json"),
            ],
            stderr=subprocess.PIPE,
        )
        try:
            wait_for_port(port, bare)
            anchor = f"http://127.0.0.1:{port}"
            assert _http("GET", f"{anchor}/recall/{memory_id}") == recalled
            for test, path, script in [
                ("GET /recall", f"/recall/{memory_id}", None),
                ("POST /stash", "/stash", BENCH / "http_post.lua"),
            ]:
                a: list[float] = []
                s: list[float] = []
                for _ in range(rounds):
                    a.append(wrk(anchor + path, seconds, script))
                    s.append(wrk(base + path, seconds, script))
                results.append((test, statistics.median(a), statistics.median(s)))
            not_found_timing(base, post_body, rounds, seconds)
        finally:
            bare.terminate()
            bare.wait(10)
    return results


def not_found_timing(base: str, post_body: str, rounds: int, seconds: int) -> None:
    """Print how fast 404s come for a missing id and for another tenant's id (no target).

    The two must not differ beyond noise, or the timing would tell that an id exists.
    """
    other = _http("POST", f"{base}/stash", post_body.encode(), key="bench-other-tenant")
    other_id = other.split(b'"memory_id":"')[1].split(b'"')[0].decode()
    missing: list[float] = []
    foreign: list[float] = []
    for _ in range(rounds):
        missing.append(wrk(f"{base}/recall/neverwas", seconds))
        foreign.append(wrk(f"{base}/recall/{other_id}", seconds))
    m, f = statistics.median(missing), statistics.median(foreign)
    print(f"404 timing: missing id {m:.0f} rps, other tenant's id {f:.0f} rps, ratio {f / m:.2f}")


def print_http(backend: str, results: list[tuple[str, float, float]]) -> int:
    """Print the http table; the number of targets missed."""
    if not results:
        return 0
    print(f"{'suite':8} {'test':12} {'bare rps':>10} {'stashd rps':>11} {'ratio':>6} {'target':>6}")
    misses = 0
    for test, bare, subject in results:
        ratio = subject / bare
        verdict = "PASS" if ratio >= HTTP_TARGET else "MISS"
        misses += ratio < HTTP_TARGET
        print(
            f"{'http/' + backend:8} {test:12} {bare:>10.0f} {subject:>11.0f} {ratio:>6.2f} {HTTP_TARGET:>6.2f} {verdict}"
        )
    return misses


def main() -> int:
    """Run the suites and print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--quick", action="store_true", help="20k requests, 1 round")
    parser.add_argument("--suite", choices=("all", "memory", "http"), default="all")
    parser.add_argument("--http-backend", default="memory", help="backend for suite http")
    parser.add_argument("--http-seconds", type=int, default=5, help="wrk duration per run")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.requests, args.http_seconds = 1, 20_000, 3
    if args.suite in ("all", "http"):
        started = time.monotonic()
        results = http_suite(args.http_backend, args.rounds, args.http_seconds)
        misses = print_http(args.http_backend, results)
        if results:
            print(
                f"summary http: {len(results) - misses} of {len(results)} targets met "
                f"({time.monotonic() - started:.0f} s)"
            )
        if args.suite == "http":
            return 0
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
