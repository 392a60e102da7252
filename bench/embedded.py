"""The embedded Python API against diskcache, the standard embedded SQLite cache with expiry.

Workload (one run, alternating subjects, medians of ``--rounds``): 100,000 ``set`` of
distinct keys with a TTL of one hour, then 100,000 ``get`` of the same keys, every
value the same dict whose JSON is 200 bytes. Subjects, each on a fresh file in a
temporary directory:

- ``diskcache.Cache`` (the anchor): ``cache.set(key, value, expire=3600)`` and
  ``cache.get(key)``, default settings (SQLite in WAL mode, synchronous=NORMAL, values
  pickled).
- ``Stash()``: embedded SQLite, the default (WAL, synchronous=NORMAL, values as JSON).
- ``Stash("memory")``: reported, no target.

Target: ``Stash()`` at least 1.0x of diskcache for set and for get. Usage:
``python bench/embedded.py [--rounds N] [--ops N]``. A report: it exits 0 either way.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stashd import Stash
from stashd.jsontext import dump_json

TTL = 3600
TARGET = 1.0
VALUE: dict[str, Any] = {
    "task": "summarize",
    "step": 3,
    "progress": 0.5,
    "done": False,
    "context": "c" * 130,
}
assert len(dump_json(VALUE)) == 200, len(dump_json(VALUE))

Subject = tuple[Callable[[str, object], object], Callable[[str], object], Callable[[], None]]


def diskcache_subject(directory: Path) -> Subject | None:
    """diskcache.Cache with its defaults, or None when it is not installed."""
    try:
        import diskcache  # noqa: PLC0415 - optional: the dev extra installs it
    except ImportError:
        return None
    cache = diskcache.Cache(str(directory / "diskcache"))
    return (lambda k, v: cache.set(k, v, expire=TTL)), cache.get, cache.close


def stash_subject(directory: Path, backend: str) -> Subject:
    """Stash embedded on a fresh SQLite file, or on memory."""
    stash = Stash(backend, path=directory / "stash.db") if backend == "sqlite" else Stash(backend)
    return (lambda k, v: stash.set(k, v, ttl=TTL)), stash.get, stash.close


def measure(subject: Subject, ops: int) -> tuple[float, float]:
    """Operations per second of ``ops`` sets, then of ``ops`` gets of the same keys."""
    put, get, close = subject
    keys = [f"key:{i:06}" for i in range(ops)]
    gc.collect()
    start = time.perf_counter()
    for key in keys:
        put(key, VALUE)
    set_rate = ops / (time.perf_counter() - start)
    start = time.perf_counter()
    for key in keys:
        got = get(key)
    get_rate = ops / (time.perf_counter() - start)
    assert got == VALUE, got
    close()
    return set_rate, get_rate


def main() -> int:
    """Measure every subject in alternation and print the ratios to diskcache."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ops", type=int, default=100_000)
    args = parser.parse_args()
    names = ("diskcache", "Stash()", 'Stash("memory")')
    rates: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for _ in range(args.rounds):
        for name in names:
            with tempfile.TemporaryDirectory() as tmp:
                if name == "diskcache":
                    subject = diskcache_subject(Path(tmp))
                    if subject is None:
                        print("skipped: diskcache is not installed (pip install -e '.[dev]')")
                        return 0
                else:
                    subject = stash_subject(Path(tmp), "memory" if "memory" in name else "sqlite")
                rates[name].append(measure(subject, args.ops))
    anchor_set = statistics.median(r[0] for r in rates["diskcache"])
    anchor_get = statistics.median(r[1] for r in rates["diskcache"])
    print(f"embedded: {args.ops:,} set (ttl {TTL} s) then {args.ops:,} get, 200-byte JSON values")
    print(f"{'subject':16} {'set/s':>9} {'ratio':>6} {'get/s':>9} {'ratio':>6} {'target':>6}")
    judged = met = 0
    for name in names:
        set_rate = statistics.median(r[0] for r in rates[name])
        get_rate = statistics.median(r[1] for r in rates[name])
        set_ratio, get_ratio = set_rate / anchor_set, get_rate / anchor_get
        if name == "Stash()":
            judged += 2
            met += (set_ratio >= TARGET) + (get_ratio >= TARGET)
            verdict = " ".join("PASS" if r >= TARGET else "MISS" for r in (set_ratio, get_ratio))
            goal = f"{TARGET:.2f} {verdict}"
        else:
            goal = "anchor" if name == "diskcache" else "report"
        print(
            f"{name:16} {set_rate:>9.0f} {set_ratio:>6.2f} {get_rate:>9.0f} {get_ratio:>6.2f} {goal}"
        )
    print(f"summary embedded: {met} of {judged} targets met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
