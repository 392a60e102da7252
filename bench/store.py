"""In-process store throughput: SQLite through each of its paths, against the memory store.

Runs SET (an operation that reads, decides and writes) and GET through
``SQLiteStore.run_many`` in batches of 1 and 50 (the daemon's path, with
synchronous=NORMAL on the loop and FULL on the worker thread), through ``run`` (the
direct path), and the same through ``MemoryStore`` as the anchor, and prints operations
per second and the ratio to the anchor. If aiosqlite happens to be installed (it is not
a dependency) it also measures the same SET done statement by statement with it, which
is why the store does not use it. Usage: ``python bench/store.py [--seconds S]``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stashd.service import MemoryService
from stashd.store.memory import MemoryStore
from stashd.store.sqlite import SCHEMA, SQLiteStore
from stashd.types import Limits, Principal

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from stashd.ops import Op
    from stashd.store.base import Store

WHO = Principal("bench", Limits(1 << 20, 3_600_000, 86_400_000))
KEYS = 1000


async def rate(seconds: float, step: Callable[[int], Awaitable[int]]) -> float:
    """Operations per second of ``step(i)`` (which returns how many it did) for ``seconds``."""
    done, i = 0, 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        done += await step(i)
        i += 1
    return done / elapsed


async def store_rates(store: Store, seconds: float) -> dict[str, float]:
    """SET and GET through run_many (batches of 1 and 50) and through run."""
    svc = MemoryService(store)
    await store.open()
    out: dict[str, float] = {}
    for batch in (1, 50):

        async def sets(i: int, batch: int = batch) -> int:
            ops: list[Op] = [
                svc.set(WHO, b"k%d" % ((i * batch + j) % KEYS), b"v") for j in range(batch)
            ]
            await store.run_many(ops)
            return batch

        async def gets(i: int, batch: int = batch) -> int:
            ops: list[Op] = [svc.get(WHO, b"k%d" % ((i * batch + j) % KEYS)) for j in range(batch)]
            await store.run_many(ops)
            return batch

        out[f"SET run_many x{batch}"] = await rate(seconds, sets)
        out[f"GET run_many x{batch}"] = await rate(seconds, gets)

    async def direct_set(i: int) -> int:
        store.run(svc.set(WHO, b"k%d" % (i % KEYS), b"v"))
        return 1

    async def direct_get(i: int) -> int:
        store.run(svc.get(WHO, b"k%d" % (i % KEYS)))
        return 1

    out["SET run"] = await rate(seconds, direct_set)
    out["GET run"] = await rate(seconds, direct_get)
    await store.close()
    return out


async def aiosqlite_set_rate(path: Path, seconds: float) -> float | None:
    """SET as four awaited aiosqlite statements (BEGIN, SELECT, upsert, COMMIT), if installed."""
    try:
        import aiosqlite  # type: ignore[import-not-found]  # noqa: PLC0415 - optional
    except ImportError:
        return None
    db = await aiosqlite.connect(path, isolation_level=None)
    await db.execute("PRAGMA journal_mode = WAL")
    await db.execute("PRAGMA synchronous = NORMAL")
    await db.executescript(SCHEMA)

    async def one(i: int) -> int:
        key = b"k%d" % (i % KEYS)
        await db.execute("BEGIN IMMEDIATE")
        cursor = await db.execute(
            "SELECT value, expires_at, version, sweep_at FROM entries "
            "WHERE namespace = 'bench' AND key = ?",
            (key,),
        )
        await cursor.fetchone()
        await db.execute(
            "INSERT INTO entries (namespace, key, value, expires_at, version, sweep_at, seq) "
            "VALUES ('bench', ?, 'v', 1, 1, 1, 1) ON CONFLICT (namespace, key) "
            "DO UPDATE SET value = excluded.value",
            (key,),
        )
        await db.execute("COMMIT")
        return 1

    result = await rate(seconds, one)
    await db.close()
    return result


async def main() -> None:
    """Measure everything and print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=1.0, help="per measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        anchor = await store_rates(MemoryStore(), args.seconds)
        normal = await store_rates(SQLiteStore(Path(tmp) / "normal.db"), args.seconds)
        full = await store_rates(
            SQLiteStore(Path(tmp) / "full.db", synchronous="full"), args.seconds
        )
        aio = await aiosqlite_set_rate(Path(tmp) / "aio.db", args.seconds)
    print(
        f"{'operation':18} {'memory/s':>10} {'normal/s':>10} {'ratio':>6} {'full/s':>10} {'ratio':>6}"
    )
    for name, base in anchor.items():
        print(
            f"{name:18} {base:>10.0f} {normal[name]:>10.0f} {normal[name] / base:>6.2f}"
            f" {full[name]:>10.0f} {full[name] / base:>6.2f}"
        )
    if aio is None:
        print("aiosqlite: not installed, comparison skipped (pip install aiosqlite to see it)")
    else:
        print(f"aiosqlite SET, statement by statement: {aio:.0f}/s")


if __name__ == "__main__":
    asyncio.run(main())
