"""What tenancy costs: ratios against stashd in open mode without a rate, measured in one run.

Rows, each by ``redis-benchmark -c 50`` at -P 1 and -P 16, alternating anchor and
subject for several rounds and taking medians:

- ``metered``: open mode with a rate limit so high nothing is refused, so every command
  goes through the limiter (and the general dispatch path). Informational: a metered
  client is held to its rate anyway (at most a few per second on the default tiers);
- ``flood``: open mode with a rate of 1/min, so nearly every command is refused with
  RATELIMIT: how cheaply the server turns a flooding client away. redis-benchmark stops
  at the first error reply, so this row uses a raw client that writes batches of 1000
  pipelined ``GET`` requests and counts reply lines, against the same client on the
  anchor (where every GET misses);
- ``strict``: ``--auth keys`` with an enterprise key (no rate): after AUTH the same path
  as open mode, so the ratio should be about 1;
- ``quotas``: open mode with its default storage quotas (1,000,000 keys and 1 GiB per
  namespace, never reached here) against the same without quotas (``--max-keys 0
  --max-bytes 0``), SET and GET of 100,000 random keys, so most SETs create a key and
  go through the quota check;
- ``tenancy``: the ``metered`` daemon (rate limit and quotas) against that unlimited
  one: everything tenancy adds to a command, together;
- ``auth``: an AUTH flood on one connection, with the same raw client as ``flood``,
  against PING on the same strict daemon: past the connection budget's 50 at once, AUTH
  is refused before any lookup, which must cost no more than answering PING.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Final

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.daemon import daemon as start_daemon
from bench.run import parse_csv
from stashd.registry import SQLiteRegistry
from stashd.service import MemoryService
from stashd.store.memory import MemoryStore
from stashd.tenancy import issue_key
from stashd.types import Limits, Principal, Quota

if TYPE_CHECKING:
    from collections.abc import Callable

TARGETS = {
    ("flood", 1000): 0.8,
    ("auth", 1000): 0.8,
    ("strict", 1): 0.9,
    ("strict", 16): 0.9,
    ("quotas", 1): 0.95,
    ("tenancy", 1): 0.95,
}
GET: Final = b"*2\r\n$3\r\nGET\r\n$7\r\nmissing\r\n"
PING: Final = b"*1\r\n$4\r\nPING\r\n"


def command(*args: str) -> bytes:
    """One request as a client sends it."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a.encode()) for a in args)


def bench(port: int, pipeline: int, requests: int, *args: str, key: str = "") -> dict[str, float]:
    """Requests per second by test name from one redis-benchmark run."""
    auth = ["-a", key] if key else []
    done = subprocess.run(
        [
            *("redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", "50"),
            *("-n", str(requests), "-P", str(pipeline), "--csv", *auth, *args),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return parse_csv(done.stdout)


def flood(
    port: int, requests: int, batch: int = 1000, request: bytes = GET, preamble: bytes = b""
) -> dict[str, float]:
    """Pipelined ``request`` over one raw connection; replies per second (each is one line).

    ``preamble`` (an AUTH) is sent and answered first, outside the measured time.
    """
    payload = request * batch
    with socket.create_connection(("127.0.0.1", port)) as sock:
        if preamble:
            sock.sendall(preamble)
            sock.recv(1 << 10)
        start = time.perf_counter()
        for _ in range(max(1, requests // batch)):
            sock.sendall(payload)
            lines = 0
            while lines < batch:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    msg = "the server closed the connection"
                    raise RuntimeError(msg)
                lines += chunk.count(b"\n")
        return {"rps": (requests // batch) * batch / (time.perf_counter() - start)}


def median_pair(
    rounds: int, anchor: Callable[[], dict[str, float]], subject: Callable[[], dict[str, float]]
) -> tuple[dict[str, float], ...]:
    """Alternate the two callables for ``rounds`` and return per-test medians of each."""
    runs: tuple[dict[str, list[float]], dict[str, list[float]]] = ({}, {})
    for _ in range(rounds):
        for side, fn in zip(runs, (anchor, subject), strict=True):
            for name, rps in fn().items():
                side.setdefault(name, []).append(rps)
    return tuple({k: statistics.median(v) for k, v in side.items()} for side in runs)


def quota_check_us(rounds: int, writes: int = 50_000) -> float:
    """What the quota check adds to a SET that creates a key, in process (memory store), in us.

    The wire rows above move by more than this between runs on a shared machine; this
    is the same code path with nothing else in the way: the median of ``rounds`` runs
    with a quota never reached, minus the median without one.
    """
    timed: dict[bool, list[float]] = {False: [], True: []}
    limits = Limits(1 << 20, 3_600_000, 86_400_000)
    for _ in range(rounds):
        for limited in (False, True):
            quota = Quota(max_keys=1 << 40, max_bytes=1 << 50) if limited else Quota()
            store = MemoryStore()
            service = MemoryService(store)
            caller = Principal("bench", replace(limits, quota=quota))
            keys = [b"k%d" % i for i in range(writes)]
            start = time.perf_counter()
            for k in keys:
                store.run(service.set(caller, k, b"v" * 20))
            timed[limited].append((time.perf_counter() - start) / writes * 1e6)
    return statistics.median(timed[True]) - statistics.median(timed[False])


def main() -> int:
    """Run the rows and print the table."""
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
    rows: list[tuple[str, str, int, float, float]] = []
    n = args.requests
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "stash.db"
        registry = SQLiteRegistry(db)
        key = issue_key(registry, "bench", "enterprise").secret
        registry.close()
        with (
            start_daemon() as plain,
            start_daemon(env={"STASH_RATE_LIMIT": "1000000000/s"}) as metered,
            start_daemon(env={"STASH_RATE_LIMIT": "1/min"}) as flooded,
            start_daemon("--auth", "keys", "--db", str(db)) as strict,
            start_daemon("--max-keys", "0", "--max-bytes", "0") as unlimited,
        ):
            # Quotas cost only on writes that grow a namespace: random keys, so most do.
            spread = ("-r", "100000", "-t", "set,get")
            for pipeline in (1, 16):
                for name, daemon in (("quotas", plain), ("tenancy", metered)):
                    a, s = median_pair(
                        args.rounds,
                        partial(bench, unlimited.port, pipeline, n, *spread),
                        partial(bench, daemon.port, pipeline, n, *spread),
                    )
                    rows += [(name, t, pipeline, a[t], s[t]) for t in ("SET", "GET")]
            for pipeline in (1, 16):
                for name, daemon, secret in (("metered", metered, ""), ("strict", strict, key)):
                    a, s = median_pair(
                        args.rounds,
                        partial(bench, plain.port, pipeline, n, "-t", "set,get"),
                        partial(bench, daemon.port, pipeline, n, "-t", "set,get", key=secret),
                    )
                    rows += [(name, t, pipeline, a[t], s[t]) for t in ("SET", "GET")]
            a, s = median_pair(
                args.rounds,
                partial(flood, strict.port, n * 5, request=PING, preamble=command("AUTH", key)),
                partial(flood, strict.port, n * 5, request=command("AUTH", key)),
            )
            rows.append(("auth", "AUTH", 1000, a["rps"], s["rps"]))
            a, s = median_pair(
                args.rounds, partial(flood, plain.port, n * 5), partial(flood, flooded.port, n * 5)
            )
            rows.append(("flood", "GET", 1000, a["rps"], s["rps"]))
    print(
        f"{'row':8} {'test':4} {'-P':>3} {'anchor rps':>12} {'subject rps':>12} "
        f"{'ratio':>6} {'target':>6}"
    )
    misses = 0
    for row, test, p, ar, sr in rows:
        target = TARGETS.get((row, p))
        verdict = "" if target is None else ("PASS" if sr / ar >= target else "MISS")
        misses += verdict == "MISS"
        shown = "" if target is None else f"{target:.2f}"
        print(
            f"{row:8} {test:4} {p:>3} {ar:>12.0f} {sr:>12.0f} {sr / ar:>6.2f} {shown:>6} {verdict}"
        )
    check_us = quota_check_us(max(args.rounds, 3))
    per_request_us = 1e6 / next(
        ar for row, t, p, ar, _ in rows if (row, t, p) == ("quotas", "SET", 1)
    )
    print(
        f"quota check: +{check_us:.2f} us per SET that creates a key (in process, memory "
        f"store), {check_us / per_request_us:.1%} of the anchor's -P1 SET"
    )
    targeted = sum(1 for r in rows if (r[0], r[2]) in TARGETS)
    print(f"summary: {targeted - misses} of {targeted} targets met")
    print(
        "anchor: open mode without a rate (metered, strict, flood); without a rate or "
        "quotas (quotas, tenancy); PING on the strict daemon (auth)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
