"""redis-benchmark's default test list against redis-server and stashd, in one run.

``redis-benchmark -q -n N`` with no ``-t`` runs every test it has by default (PING,
SET, GET, INCR, the list, set, hash and sorted-set writes, LRANGE of 100 to 600
items, MSET) with 50 clients; a reply it cannot take stops it. This measures it once
against redis-server without persistence and once against stashd on each backend
asked for, and prints each test's requests per second and the ratio stashd / redis.
It is a report: no target, exit 0 (1 only when a run did not reach its end).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.daemon import daemon
from bench.run import parse_csv
from tests.support.servers import RedisServer


def default_run(port: int, requests: int) -> dict[str, float]:
    """Requests per second by test, from one default run; raises when the run stopped."""
    args = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-n", str(requests), "--csv"]
    done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=1800)
    if done.returncode != 0 or "ERR" in done.stdout or "ERR" in done.stderr:
        msg = f"redis-benchmark stopped: {(done.stderr or done.stdout).strip()[-300:]}"
        raise RuntimeError(msg)
    return parse_csv(done.stdout)


def main() -> int:
    """Run the list against the anchor and each backend; print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--backend", choices=("memory", "sqlite", "redis", "all"), default="all")
    args = parser.parse_args()
    if shutil.which("redis-benchmark") is None:
        print("skipped: redis-benchmark is not on PATH")
        return 0
    backends = ("memory", "sqlite", "redis") if args.backend == "all" else (args.backend,)
    with RedisServer() as anchor:
        results = {"redis-server": default_run(anchor.port, args.requests)}
        for backend in backends:
            extra = ("--redis-url", anchor.url) if backend == "redis" else ()
            with daemon("--backend", backend, *extra, "--no-http") as stashd:
                try:
                    results[backend] = default_run(stashd.port, args.requests)
                except RuntimeError as exc:
                    print(f"{backend}: {exc}")
                    return 1
    base = results["redis-server"]
    names = list(base)
    width = max(len(n) for n in names)
    print(f"{'test':{width}} {'redis rps':>10} " + " ".join(f"{b:>16}" for b in backends))
    for name in names:
        cells = [
            f"{results[b][name]:>8.0f} ({results[b][name] / base[name]:.2f})" for b in backends
        ]
        print(f"{name:{width}} {base[name]:>10.0f} " + " ".join(f"{c:>16}" for c in cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
