"""The SQLite store: entries in one table of a WAL database file, durable across crashes.

Every path runs the operations of :mod:`stashd.ops` against a
:class:`~stashd.store.sqlite_view.SQLiteView`, a view over one ``sqlite3`` connection
inside one open transaction:

- :meth:`SQLiteStore.run_many` is the daemon's path. The :class:`~stashd.batch.Batcher`
  hands it everything every connection asked for in one turn of the loop, and the whole
  batch runs as ONE transaction: group commit. The results go back only after COMMIT
  returned, so an acknowledged write is in the database file's write-ahead log and
  survives a crash of the process.
- :meth:`SQLiteStore.run` is the direct synchronous path for in-process use: the calling
  thread gets its own connection and runs the operation in its own short transaction.

Where a batch runs. With ``synchronous=NORMAL`` a WAL commit is a ``write()`` of the
changed pages, never an fsync (those happen at checkpoints), so a batch costs
microseconds of CPU and is run right on the event loop thread, on a connection that
never waits for a lock (``busy_timeout`` 0, no automatic checkpoints). If another
connection holds the write lock (another process, a direct-path thread, the sweep), that
connection's ``BEGIN IMMEDIATE`` fails at once, nothing has happened, and the batch goes
to a worker thread whose connection waits for the lock: the loop never waits on a lock.
With ``synchronous=FULL`` every commit is an fsync, so every write batch goes to the
worker; reads stay on the loop. The worker also runs the sweep and checkpoints the WAL
about once a second (the fsyncs), like Redis's ``appendfsync everysec`` does in its
background thread. Measured against the first design, which ran every write batch on
the worker, this is one thread hop and two GIL hand-offs less per batch: unpipelined
SET went from ~0.47x to ~0.55x of redis-server (see bench/README.md).

Batched reads and writes. Inside one transaction the view remembers every row it has
read or written: before a batch runs, the rows of all its keys are fetched with one
``SELECT ... WHERE key IN (...)`` per namespace, and writes are collected and applied
with one ``executemany`` per kind just before COMMIT (or before any query that reads
through SQL: SCAN, DBSIZE, FLUSHDB). Several writes to one key in one batch become one
row update. Nothing outlives the transaction, so other processes' writes are always
seen.

Why not aiosqlite. It has the right threading model (one connection owned by one
thread, futures resolved on the loop), but its public API awaits one statement, or one
``executemany``, per call. An operation reads, decides in Python and then writes inside
one transaction, so a batch of N operations would cost 2N or more awaited thread hops;
on a 2-core machine aiosqlite awaited statement by statement did about 3,400 SETs per
second (bench/store.py). Handing its thread a whole function needs aiosqlite's private ``_execute``,
so the store keeps the model (its own worker thread and queue) and not the dependency.

Expired rows are invisible at once (every read compares ``expires_at`` with the store's
clock) and are removed physically by a sweep of at most :data:`SWEEP_ROWS` rows per
transaction, found through the expiry index, on the worker thread between batches, so
it never holds the write lock for long. Direct users get a sweep every
:data:`WRITES_PER_SWEEP` writes. Freed pages are reused by later inserts, so under
steady churn the file stops growing. ``auto_vacuum`` stays off: it can only be chosen
before the first table exists (and the key registry may create the file), and giving
pages back to the file system after each sweep would only have churn ask for them again.

Several connections, threads and processes can share the file: WAL lets readers run
beside the one writer, writes take the lock up front with ``BEGIN IMMEDIATE`` (a
deferred transaction that upgrades to a write can fail at once instead of waiting), and
``busy_timeout`` makes the worker and direct-path connections wait for another's commit
instead of failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.resources
import os
import queue
import sqlite3
import threading
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from stashd import log
from stashd.errors import StashError, StoreUnavailable
from stashd.store.base import ExpiredListener, Store, StoreOpenError, run_each
from stashd.store.sqlite_usage import FILL_USAGE, creates_fit, lacks_usage
from stashd.store.sqlite_view import OneReadView, SQLiteView, sweep_at
from stashd.types import Clock, Entry, wall_clock_ms

if TYPE_CHECKING:
    from collections.abc import Callable

    from stashd.ops import Op

logger = log.get("stashd.store.sqlite")

SCHEMA: Final = importlib.resources.files("stashd.store").joinpath("schema.sql").read_text()


def _split(script: str) -> tuple[str, ...]:
    """A script's statements one by one, comments removed (they hold semicolons of their own).

    A piece ending in a semicolon is a statement only once SQLite says it is complete: a
    trigger's body holds semicolons of its own.
    """
    statements: list[str] = []
    pending = ""
    for piece in "\n".join(line.split("--", 1)[0] for line in script.splitlines()).split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                statements.append(pending.strip())
            pending = ""
    return tuple(statements)


#: The schema's statements, each run on its own.
_STATEMENTS: Final = _split(SCHEMA)

#: ``PRAGMA synchronous`` settings offered. NORMAL: in WAL mode a commit is written to
#: the log but synced only at checkpoints, so it survives a crash of the process, not a
#: power loss. FULL: every commit is synced, surviving power loss at the cost of an
#: fsync per batch.
SYNCHRONOUS: Final = ("normal", "full")

#: Writes are upserts (INSERT ... ON CONFLICT DO UPDATE), which SQLite has since 3.24.
MIN_SQLITE: Final = (3, 24, 0)

#: How long worker and direct-path connections wait for another connection's write lock
#: (another thread or process on the same file) before giving up; far longer than any
#: batch or sweep step holds it.
BUSY_TIMEOUT_MS: Final = 5000

#: Pause between attempts to set up a connection while another one sets up the file.
SETUP_RETRY_S: Final = 0.005

#: Rows one sweep transaction deletes: a few milliseconds of write lock at most.
SWEEP_ROWS: Final = 256
#: Sweep transactions per maintenance tick while rows keep coming and no batch waits:
#: ten ticks a second free up to ~40k rows per second.
SWEEP_ROUNDS: Final = 16
#: Direct (synchronous) writes between opportunistic sweeps, where no timer calls maintain().
WRITES_PER_SWEEP: Final = 1024
#: Seconds between WAL checkpoints (the fsyncs of synchronous=NORMAL) while writes come in.
CHECKPOINT_INTERVAL: Final = 1.0

#: A log longer than this many pages (SQLite's own automatic checkpoint threshold) is
#: started over after the next checkpoint; see ``SQLiteStore._checkpoint``.
RESTART_FRAMES: Final = 1000
#: How long that restart may hold writers back while it waits for readers to finish.
RESTART_WAIT_MS: Final = 50

#: Page cache per connection, in KiB, so the hot part of the table stays in memory.
CACHE_KIB: Final = 16384
#: The WAL file is truncated back to this size when it starts over, and a file larger
#: than this is checkpointed at every maintenance tick instead of once a second: heavy
#: writes (random keys rewrite whole 4 KiB pages) can otherwise append 100+ MB a second.
WAL_SIZE_LIMIT: Final = 16 * 1024 * 1024

#: Rows of one INSERT of new ids: 7 parameters each, and SQLite before 3.32 allows 999.
CREATE_ROWS: Final = 128
#: One row of that INSERT: its seq is the namespace's largest plus the row's place.
_NEW_ROW: Final = (
    "(?, ?, ?, ?, ?, ?, (SELECT ifnull(max(seq), 0) FROM entries WHERE namespace = ?) + ?)"
)
_EXPIRED: Final = "SELECT 1 FROM entries WHERE sweep_at <= ? LIMIT 1"
_SWEEP: Final = (
    "DELETE FROM entries WHERE id IN "
    "(SELECT id FROM entries WHERE sweep_at <= ? ORDER BY sweep_at LIMIT ?)"
)
#: While someone listens for ``expired``: the rows expired by now, found through the
#: expiry index up to the current window (whose rows not yet expired it passes over),
#: deleted, and named, so each is announced within a tick of its expiry, not a window.
_SWEEP_EXPIRED: Final = (
    "DELETE FROM entries WHERE id IN "
    "(SELECT id FROM entries WHERE sweep_at <= ? AND expires_at <= ? LIMIT ?) "
    "RETURNING namespace, key"
)
_ANY_EXPIRED: Final = "SELECT 1 FROM entries WHERE sweep_at <= ? AND expires_at <= ? LIMIT 1"


class _Owned:
    """A connection some thread owns; dropping this (the thread ended) closes it."""

    __slots__ = ("__weakref__", "conn", "one", "view")

    def __init__(self, conn: sqlite3.Connection, clock: Clock, hands: dict[str, int]) -> None:
        self.conn = conn
        self.view = SQLiteView(conn, clock, hands)
        self.one = OneReadView(conn)

    def __del__(self) -> None:
        self.conn.close()


class _Local(threading.local):
    """A thread's own connections: one that waits for locks, one that never does."""

    waiting: _Owned | None = None
    nowait: _Owned | None = None


class SQLiteStore(Store):
    """Entries in a SQLite file; see the module docstring for threads and transactions."""

    # WAL readers never wait for a writer, so reads can be answered at once.
    inline_reads = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        clock: Clock = wall_clock_ms,
        *,
        synchronous: str = "normal",
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
        checkpoint_interval: float = CHECKPOINT_INTERVAL,
        create: bool = True,
    ) -> None:
        super().__init__(clock)
        if synchronous not in SYNCHRONOUS:
            msg = f"synchronous must be one of {', '.join(SYNCHRONOUS)}, got {synchronous!r}"
            raise ValueError(msg)
        self.path = Path(path)
        self.synchronous = synchronous
        self.busy_timeout_ms = busy_timeout_ms
        self.checkpoint_interval = checkpoint_interval
        # False for a caller that only reads: a missing file is then an error, not a new
        # empty database (and folders) left behind by a command that found nothing.
        self.create = create
        # Write batches may run on the loop only when a commit never fsyncs.
        self._inline_writes = synchronous == "normal"
        self._schema_lock = threading.Lock()
        self._schema_ready = False
        self._local = _Local()
        self._owned: weakref.WeakSet[_Owned] = weakref.WeakSet()
        self._direct_writes = 0
        self._closed = False
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._background_queued = False
        self._background_at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._checkpoint_at = 0.0
        self._unsynced = False  # commits since the last checkpoint (NORMAL only syncs there)
        self._writes_to_worker = False  # set by the worker while it restarts the log
        # Where refused writes last looked for expired rows, by namespace (SQLiteView).
        self._quota_hands: dict[str, int] = {}

    # -- connections -----------------------------------------------------------------
    def connect(self, *, wait: bool = True) -> sqlite3.Connection:
        """A new connection with this store's settings; the schema is ensured once.

        ``wait=False`` gives the event loop's connection: it fails at once instead of
        waiting for another connection's lock, and leaves checkpoints to the worker.
        """
        if sqlite3.sqlite_version_info < MIN_SQLITE:  # pragma: no cover - the system's SQLite
            need = ".".join(map(str, MIN_SQLITE))
            raise StoreOpenError(
                f"SQLite {sqlite3.sqlite_version} is too old: the sqlite backend needs {need}"
            )
        try:
            self._create_file()
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise StoreOpenError(f"cannot open the database {self.path}: {exc}") from exc
        try:
            # The schema and the journal mode are set with waiting allowed even on the
            # loop's connection: that happens once, when the connection is made.
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            mode = self._set_up(conn)
            if not wait:
                conn.execute("PRAGMA busy_timeout = 0")
                conn.execute("PRAGMA wal_autocheckpoint = 0")
        except sqlite3.Error as exc:
            conn.close()
            raise StoreOpenError(f"cannot use the database {self.path}: {exc}") from exc
        if mode != "wal":  # pragma: no cover - file systems without shared memory
            conn.close()
            raise StoreOpenError(
                f"cannot use the database {self.path}: journal_mode stays {mode!r}, "
                "WAL is needed (is it on a network file system?)"
            )
        return conn

    def _set_up(self, conn: sqlite3.Connection) -> str:
        """Settings, journal mode and schema; the journal mode it got is returned.

        Turning a new file to WAL needs the file to itself, and SQLite reports a
        connection doing the same at that moment as busy without waiting for it (two
        processes, or threads, starting on a fresh file). So that step is retried until
        the busy timeout has passed.
        """
        conn.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
        conn.execute("PRAGMA foreign_keys = OFF")
        conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        deadline = time.monotonic() + self.busy_timeout_ms / 1000
        while True:
            try:
                mode: str = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                self._ensure_schema(conn)
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                    raise
                if time.monotonic() >= deadline:
                    raise
                _rollback(conn)
                time.sleep(SETUP_RETRY_S)
                continue
            return mode

    def _create_file(self) -> None:
        """Create missing folders and the file itself, private to the user (0700/0600)."""
        if not self.create:
            if not self.path.exists():  # a folder in its place fails in connect, with why
                raise StoreOpenError(f"the database {self.path} does not exist")
            return
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not self.path.exists():
            # SQLite gives its -wal and -shm files the mode of the database file.
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))

    def _ensure_schema(self, conn: sqlite3.Connection) -> None:
        with self._schema_lock:
            if self._schema_ready:
                return
            # One transaction, so a second process creating the same file waits instead
            # of seeing half a schema (executescript would commit before it started).
            conn.execute("BEGIN IMMEDIATE")
            try:
                _migrate(conn)
                fill = lacks_usage(conn)
                for statement in _STATEMENTS:
                    conn.execute(statement)
                if fill:
                    conn.execute(FILL_USAGE)
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
            self._schema_ready = True

    def _own(self, *, wait: bool) -> _Owned:
        """The calling thread's connection of the given kind, made on first use."""
        local = self._local
        owned = local.waiting if wait else local.nowait
        if owned is None:
            if self._closed:
                raise StoreUnavailable("store is closed")
            owned = _Owned(self.connect(wait=wait), self.clock, self._quota_hands)
            self._owned.add(owned)
            if wait:
                local.waiting = owned
            else:
                local.nowait = owned
        return owned

    # -- transactions ----------------------------------------------------------------
    def _transaction(self, conn: sqlite3.Connection, view: SQLiteView, ops: list[Op]) -> list[Any]:
        """Run ``ops`` in one transaction; each operation's StashError is its result."""
        writes = False
        for op in ops:
            if op.writes:
                writes = True
                break
        conn.execute("BEGIN IMMEDIATE" if writes else "BEGIN")
        try:
            if len(ops) > 1:
                view.prefetch(ops)
            results = run_each(view, ops, self.clock())
            if writes:
                view.flush()
            conn.execute("COMMIT")
        except BaseException:
            view.reset()
            _rollback(conn)
            raise
        view.reset()
        return results

    def _batch(self, conn: sqlite3.Connection, view: SQLiteView, ops: list[Op]) -> list[Any]:
        """One transaction for the batch; a failing operation is isolated from the rest."""
        rows = _fresh_rows(ops)
        if rows is not None:
            created = _create_all(conn, ops, rows, self.clock())
            if created is not None:
                return created
        try:
            return self._transaction(conn, view, ops)
        except sqlite3.Error:
            # The database failed (lock, disk full, I/O error): nothing of the batch is
            # kept, and the caller decides (retry on the worker, or answer every client).
            raise
        except Exception:
            # One operation failed in a way it should not (a bug, not a refusal). The
            # batch was rolled back; run each operation alone so only that one fails.
            if len(ops) == 1:
                raise
            return [self._alone(conn, view, op) for op in ops]

    def _alone(self, conn: sqlite3.Connection, view: SQLiteView, op: Op) -> Any:  # noqa: ANN401
        try:
            return self._transaction(conn, view, [op])[0]
        except sqlite3.Error:
            raise
        except Exception as exc:
            logger.exception("operation_failed", operation=type(op).__name__)
            return StoreUnavailable(type(exc).__name__)

    # -- the direct path -------------------------------------------------------------
    def run(self, op: Op) -> Any:  # noqa: ANN401 - each operation has its own result type
        """Run one operation in its own transaction on the calling thread's connection.

        An operation that is one read of one row (``op.ONE_READ``) runs without BEGIN and
        COMMIT: its single SELECT is its own read transaction, and the two statements
        saved are a third of the cost of a direct GET.
        """
        owned = self._own(wait=True)
        if op.ONE_READ:
            return op.run(owned.one, self.clock())
        (result,) = self._transaction(owned.conn, owned.view, [op])
        if isinstance(result, StashError):
            raise result
        if op.writes:
            self._direct_writes += 1
            if self._direct_writes >= WRITES_PER_SWEEP:
                self._direct_writes = 0
                _sweep(owned.conn, self.clock(), 1, _never)
        return result

    # -- reads on the loop -----------------------------------------------------------
    def read_now(self, op: Op) -> Any:  # noqa: ANN401 - each operation has its own result type
        """Run a read on the loop's connection, in a read transaction that lasts one loop turn.

        Starting and ending a WAL read transaction takes file locks (system calls), so
        every read of one turn of the loop shares one transaction; it ends before the
        loop looks for new requests, and before any batch begins. A client whose write
        was acknowledged can only ask again in a later turn, so it always sees its write.
        """
        owned = self._own(wait=False)
        conn = owned.conn
        try:
            if not conn.in_transaction:
                conn.execute("BEGIN")
                asyncio.get_running_loop().call_soon(_end_read, owned)
            result = op.run(owned.view, self.clock())
        except sqlite3.OperationalError:  # pragma: no cover - needs a crashed writer's log
            # Rare in WAL mode (another process is recovering the log): read on this
            # thread's waiting connection instead of failing the request.
            _end_read(owned)
            return self.run(op)
        except BaseException:
            _end_read(owned)
            raise
        return result

    def sweep(self, now: int | None = None, rounds: int = 1) -> int:
        """Delete up to ``rounds`` x :data:`SWEEP_ROWS` expired rows now; return how many."""
        conn = self._own(wait=True).conn
        return _sweep(conn, self.clock() if now is None else now, rounds, _never)

    # -- the batched path ------------------------------------------------------------
    async def open(self) -> None:
        """Start the worker and open the loop's connection, so a bad path fails at start."""
        try:
            self._own(wait=False)
            await self._submit(lambda _conn, _view: None)
        except BaseException:
            await self.close()
            raise

    async def run_many(self, ops: list[Op]) -> list[Any]:
        """Run the batch as one transaction; the results come back after its commit."""
        if self._closed:
            raise StoreUnavailable("store is closed")
        if not ops:
            return []
        writes = any(op.writes for op in ops)
        results: list[Any]
        owned = self._own(wait=False)
        _end_read(owned)  # a batch starts from the latest commit, wherever it runs
        if not writes or (self._inline_writes and not self._writes_to_worker):
            try:
                results = self._batch(owned.conn, owned.view, ops)
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                    raise
                # Another connection holds the lock. Nothing happened; wait for it on
                # the worker thread instead of on the loop.
            else:
                if writes:
                    self._wrote()
                return results
        try:
            results = await self._submit(lambda conn, view: self._batch(conn, view, ops))
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                raise
            # Even waiting did not get the lock: say so plainly, for every operation.
            busy = StoreUnavailable(
                f"another connection held the database's write lock "
                f"for more than {self.busy_timeout_ms} ms"
            )
            return [busy] * len(ops)
        if writes:
            self._wrote()
        return results

    def _wrote(self) -> None:
        self._unsynced = True
        if not self._background_queued and time.monotonic() - self._background_at >= 1.0:
            # Without a timer calling maintain() (embedded use), writes drive it.
            self.maintain()

    def maintain(self) -> None:
        """Queue a bounded sweep (and a checkpoint when due) on the worker, never twice."""
        if self._closed or self._background_queued:
            return
        self._background_queued = True
        self._background_at = time.monotonic()
        self._loop = asyncio.get_running_loop()  # where the sweep's expired keys are told
        self._put(_Job(self._background, None, None))

    async def close(self) -> None:
        """Finish queued work, close the worker's connection, then every thread's own."""
        if self._closed:
            return
        self._closed = True
        worker = self._worker
        if worker is not None:
            self._jobs.put(None)
            await asyncio.get_running_loop().run_in_executor(None, worker.join)
        self.close_threads()

    def describe(self) -> str:
        """The store and its file."""
        return f"sqlite at {self.path}"

    def close_threads(self) -> None:
        """Close every thread's connections (call when no thread uses the store any more)."""
        self._closed = True
        for owned in list(self._owned):
            owned.conn.close()
        self._local = _Local()

    # -- the worker ------------------------------------------------------------------
    def _put(self, job: _Job) -> None:
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="stash-sqlite", daemon=True)
            self._worker.start()
        self._jobs.put(job)

    def _submit(self, fn: Callable[[sqlite3.Connection, SQLiteView], Any]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._put(_Job(fn, loop, future))
        return future

    def _work(self) -> None:
        """The worker thread: owns one connection and runs jobs in the order they came."""
        owned: _Owned | None = None
        jobs = self._jobs
        while (job := jobs.get()) is not None:
            loop, future = job.loop, job.future
            try:
                # Connected on first use, and again after a failed attempt: a file that
                # could not be opened a moment ago may be fine now.
                if owned is None:
                    owned = _Owned(self.connect(), self.clock, self._quota_hands)
                result = job.fn(owned.conn, owned.view)
            except BaseException as exc:  # noqa: BLE001 - the waiting caller re-raises it
                if loop is not None and future is not None:
                    loop.call_soon_threadsafe(_fail, future, exc)
                else:
                    logger.warning("sqlite_background_failed", error=str(exc))
            else:
                if loop is not None and future is not None:
                    loop.call_soon_threadsafe(_resolve, future, result)
        if owned is not None:
            owned.conn.close()

    def _background(self, conn: sqlite3.Connection, _view: SQLiteView) -> None:
        """Sweep expired rows, yielding to waiting batches; checkpoint about once a second."""
        self._background_queued = False
        jobs = self._jobs
        try:
            at = self.clock()
            listener = self.expired
            freed = 0
            if listener is not None and listener.listening and self._loop is not None:
                found = _sweep_expired(conn, at, SWEEP_ROUNDS, lambda: not jobs.empty())
                if found:
                    freed = len(found)
                    self._loop.call_soon_threadsafe(_announce, listener, found)
            freed += _sweep(conn, at, SWEEP_ROUNDS, lambda: not jobs.empty())
            if freed:
                self._unsynced = True
                logger.debug("expired_swept", rows=freed)
            now = time.monotonic()
            if self._unsynced and (
                now - self._checkpoint_at >= self.checkpoint_interval
                or self._wal_bytes() > WAL_SIZE_LIMIT
            ):
                self._unsynced = False
                self._checkpoint_at = now
                self._checkpoint(conn)
        except sqlite3.Error as exc:
            # Another process held the lock past the timeout, or the disk failed: expired
            # rows stay invisible, and the next tick tries again.
            logger.warning("sqlite_maintenance_failed", error=str(exc))

    def _wal_bytes(self) -> int:
        try:
            return Path(f"{self.path}-wal").stat().st_size
        except OSError:
            return 0

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        """Copy the log into the database file, syncing both; start the log over if long.

        PASSIVE never waits for readers or writers, so it is the one that does the
        copying. But under steady writes it never catches up with the end of the log,
        and SQLite starts a log over only once all of it has been copied: it would grow
        without end (1 GB after 200,000 random-key writes, measured). So when the log is
        long, a RESTART follows: it holds writers back while it copies the little that
        was appended meanwhile, and waits at most RESTART_WAIT_MS for readers and other
        processes before giving up until the next time. Meanwhile the loop sends its
        write batches to this thread's queue, behind this job.
        """
        _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if frames < RESTART_FRAMES:
            return
        # The loop would otherwise win the write lock nearly every time the restart
        # tries for it; its write batches come to this queue meanwhile instead.
        self._writes_to_worker = True
        conn.execute(f"PRAGMA busy_timeout = {RESTART_WAIT_MS}")
        try:
            conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        finally:
            self._writes_to_worker = False
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")


class _Job:
    """Work for the worker thread; ``future`` (on ``loop``) gets the result, if anyone waits."""

    __slots__ = ("fn", "future", "loop")

    def __init__(
        self,
        fn: Callable[[sqlite3.Connection, SQLiteView], Any],
        loop: asyncio.AbstractEventLoop | None,
        future: asyncio.Future[Any] | None,
    ) -> None:
        self.fn = fn
        self.loop = loop
        self.future = future


def _sweep(conn: sqlite3.Connection, now: int, rounds: int, yield_now: Callable[[], bool]) -> int:
    """Delete expired rows in transactions of :data:`SWEEP_ROWS`, up to ``rounds`` of them.

    Stops early when a round finds fewer rows (nothing left) or ``yield_now()`` says that
    batches are waiting.
    """
    freed = 0
    for _ in range(rounds):
        # Look first, without the write lock: most ticks find nothing to do.
        if conn.execute(_EXPIRED, (now,)).fetchone() is None:
            break
        conn.execute("BEGIN IMMEDIATE")
        try:
            deleted = conn.execute(_SWEEP, (now, SWEEP_ROWS)).rowcount
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        freed += deleted
        if deleted < SWEEP_ROWS or yield_now():
            break
    return freed


def _sweep_expired(
    conn: sqlite3.Connection, now: int, rounds: int, yield_now: Callable[[], bool]
) -> list[tuple[str, bytes]]:
    """Delete rows expired by ``now`` as :func:`_sweep` does, naming each: (namespace, key)."""
    found: list[tuple[str, bytes]] = []
    window = sweep_at(now)
    for _ in range(rounds):
        # Look first, without the write lock: most ticks find nothing to do.
        if conn.execute(_ANY_EXPIRED, (window, now)).fetchone() is None:
            break
        conn.execute("BEGIN IMMEDIATE")
        try:
            rows = conn.execute(_SWEEP_EXPIRED, (window, now, SWEEP_ROWS)).fetchall()
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        found += rows
        if len(rows) < SWEEP_ROWS or yield_now():
            break
    return found


def _announce(listener: ExpiredListener, found: list[tuple[str, bytes]]) -> None:
    """On the loop: tell the listener of the expired keys, by namespace, in order."""
    by_ns: dict[str, list[bytes]] = {}
    for ns, key in found:
        by_ns.setdefault(ns, []).append(bytes(key))
    for ns, keys in by_ns.items():
        listener.expired(ns, keys)


def _fresh_rows(ops: list[Op]) -> list[tuple[bytes, Entry]] | None:
    """Each operation's fresh entry (:meth:`~stashd.ops.Op.fresh`); None unless all have one."""
    rows = []
    for op in ops:
        row = op.fresh()
        if row is None:
            return None
        rows.append(row)
    return rows


def _create_all(
    conn: sqlite3.Connection, ops: list[Op], rows: list[tuple[bytes, Entry]], now: int
) -> list[bytes] | None:
    """A batch of STASH (POST /stash) in one transaction, without reading first.

    A new id is almost never in use, so instead of a SELECT per id (what running each
    operation would do) the rows go in with one INSERT per :data:`CREATE_ROWS`, each of
    which may only take the place of an expired row. If any id is in use by a live key
    (the INSERT changed fewer rows than it was given), nothing is kept and None says
    so: the caller then runs the batch the general way, which starts from the same ids
    (each operation draws an id once) and draws others where they collide.
    """
    keys = [key for key, _ in rows]
    conn.execute("BEGIN IMMEDIATE")
    try:
        if not creates_fit(conn, ops, rows):
            _rollback(conn)
            return None
        for start in range(0, len(ops), CREATE_ROWS):
            chunk = ops[start : start + CREATE_ROWS]
            params: list[object] = []
            # The k-th new key of a namespace in this INSERT gets its largest seq plus k,
            # whether SQLite reads that largest before the rows go in or row by row
            # (then the seqs skip, and still only grow): unique and increasing either way.
            nth: dict[str, int] = {}
            for op, (key, entry) in zip(chunk, rows[start : start + CREATE_ROWS], strict=True):
                ns = op.ns
                nth[ns] = k = nth.get(ns, 0) + 1
                expires_at = entry.expires_at
                params += (ns, key, entry.value, expires_at, entry.version)
                params += (sweep_at(expires_at), ns, k)
            params.append(now)
            if conn.execute(_create_sql(len(chunk)), params).rowcount != len(chunk):
                _rollback(conn)
                return None
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise
    return keys


@functools.cache
def _create_sql(rows: int) -> str:
    """The INSERT of ``rows`` new entries that replaces only expired rows."""
    # Built from placeholders only, never from data.
    return (
        "INSERT INTO entries (namespace, key, value, expires_at, version, sweep_at, seq) "  # noqa: S608
        f"VALUES {', '.join([_NEW_ROW] * rows)} "
        "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, "
        "expires_at = excluded.expires_at, version = excluded.version, "
        "sweep_at = excluded.sweep_at, kind = 1 "  # a new id holds a string (JSON)
        "WHERE entries.expires_at <= ?"
    )


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring an entries table from before the seq or kind column up to the schema.

    Rows without a seq take seq = id: ids only grow, so each namespace's order stays as
    it was and a cursor handed out before the upgrade resumes where it left off. Rows
    without a kind were all strings, the column's default.
    """
    columns = {row[1] for row in conn.execute("PRAGMA table_info(entries)")}
    if "namespace" not in columns:
        return  # a new file: the schema creates the table
    if "seq" not in columns:
        conn.execute("ALTER TABLE entries ADD COLUMN seq INTEGER NOT NULL DEFAULT 0")
        conn.execute("UPDATE entries SET seq = id")
        conn.execute("DROP INDEX IF EXISTS entries_namespace")
    if "kind" not in columns:
        conn.execute("ALTER TABLE entries ADD COLUMN kind INTEGER NOT NULL DEFAULT 1")


def _end_read(owned: _Owned) -> None:
    """End the loop's read transaction, if one is open, and forget what it read."""
    owned.view.reset()
    # The connection may be closed already when a turn of the loop ends after close().
    with contextlib.suppress(sqlite3.Error):
        if owned.conn.in_transaction:
            owned.conn.execute("COMMIT")


def _resolve(future: asyncio.Future[Any], result: object) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _never() -> bool:
    return False
