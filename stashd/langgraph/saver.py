"""LangGraph checkpointers on Stash: every checkpoint of a thread expires with its thread.

**Key layout.** Every key starts with ``lg`` and the thread, so one glob,
``pattern("lg", thread)``, finds all of a thread (parts made by
:mod:`stashd.langgraph.keys`: thread ids, namespaces and channel names are any text,
and none reaches another's keys):

- ``lg:<thread>:cp:<ns>:<checkpoint id>`` holds one checkpoint as one JSON document,
  ``{"checkpoint": T, "metadata": T, "parent": id, "writes": {"<task>,<idx>": W}}``,
  where ``T`` is ``{"t": type, "b": base64 bytes}`` (the serde's ``dumps_typed``) and
  ``W`` is ``{"task", "channel", "value": T, "path", "idx"}``: the pending writes live
  in their checkpoint's document, so they go when it goes.
- ``lg:<thread>:bl:<ns>:<channel>:<version>`` holds one channel value ``T``, written
  when the version is new; a checkpoint names the versions it reads (its
  ``channel_versions``), as LangGraph's own savers do, so an unchanged channel is
  not written again.

**TTL, in seconds (Stash's unit).** Every key is written with ``ttl`` (None: the
Stash's default TTL; over its maximum the write raises Stash's InvalidTTL, and
nothing is stored). Every write (``put``, ``put_writes``, ``copy_thread`` on its
target) then extends each key of the thread back to the full ``ttl``, and so does
``get_tuple`` when ``refresh_on_read`` is set. So the keys of a thread share one
expiry: ``ttl`` seconds after the last write (or refreshing read) the whole thread
goes, not part of it. Stash counts the seconds left in whole seconds, so "one
expiry" holds to the second: the keys of a thread go within a second of one
another, and a write in the thread's last second can find some already gone.
The cost: every write lists the thread's keys (a glob, which walks the Stash's
namespace a page at a time: O(keys in the namespace)) and extends each key that
lost half a second or more (O(keys in the thread) calls; none for writes less than
half a second apart).

**Atomic writes.** ``put_writes`` reads the checkpoint's document with its version,
keeps LangGraph's rule (a regular write, index >= 0, never replaces one already
stored for that task and index; the special ones of ``WRITES_IDX_MAP``, negative,
always do) and applies all its writes as one merge patch under ``if_version``: a
concurrent writer makes the update a Conflict, and the call reads again and retries,
instead of a read-modify-write that loses one of the two. All the writes of one
call land, or none do. ``put`` writes the new channel values first and then the
checkpoint that reads them, merged into its document when one exists (so a re-put
keeps the writes). The first write of a document, by either, is an ``add`` (SET
NX): LangGraph saves a step's checkpoint and its writes from different threads, and
of two first writes one makes the document and the other merges into it.

The file runs past 600 lines on purpose: :class:`StashSaver` and
:class:`AsyncStashSaver` are one checkpointer, blocking and awaited. Each operation
is written once, in ``_Flows``, as a generator of the Stash calls it needs, over the
key layout and (de)serialisation of ``_Layout``; the two savers only run those calls
(``plans.run``, ``plans.arun``) and give them LangGraph's method names, which are most of the
lines, kept together so that the interface stays whole in one place.
"""

from __future__ import annotations

import asyncio
import base64
import random
from typing import TYPE_CHECKING, Any, Final, TypeVar

from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_checkpoint_metadata,
    writes_sort_key,
)

from stashd.errors import Conflict, InvalidTTL
from stashd.langgraph import keys
from stashd.langgraph.plans import Plan, arun, call, run, wait_on

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Iterator, Sequence

    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.serde.base import SerializerProtocol

    from stashd.client import AsyncStash, Stash

T = TypeVar("T")

#: The first part of every key a saver writes.
PREFIX: Final = "lg"
#: The kind part of a checkpoint's key and of a channel value's key.
CHECKPOINT: Final = "cp"
BLOB: Final = "bl"
#: Entries asked for per page when a thread's keys are extended: MEMORIES' most.
PAGE: Final = 1000
#: How often ``put_writes`` reads again after losing a race for the same checkpoint.
WRITE_ATTEMPTS: Final = 32

Typed = dict[str, str]
Doc = dict[str, Any]


def _typed(pair: tuple[str, bytes]) -> Typed:
    """A ``dumps_typed`` pair as JSON Stash stores: the type, and the bytes in base64."""
    return {"t": pair[0], "b": base64.b64encode(pair[1]).decode("ascii")}


def _pair(typed: Typed) -> tuple[str, bytes]:
    """The ``dumps_typed`` pair a :func:`_typed` document holds."""
    return typed["t"], base64.b64decode(typed["b"])


def _config(thread: str, ns: str, checkpoint_id: str) -> RunnableConfig:
    return {
        "configurable": {
            "thread_id": thread,
            "checkpoint_ns": ns,
            "checkpoint_id": checkpoint_id,
        }
    }


def next_version(current: str | float | None) -> str:
    """The version after ``current``: a zero-padded counter and a random tie-breaker."""
    number = 0 if current is None else int(str(current).split(".")[0])
    tie = random.random()  # noqa: S311 - orders concurrent versions, not a secret
    return f"{number + 1:032}.{tie:016}"


def shortfall(ttl: int, remaining: int) -> int:
    """The whole seconds a key with ``remaining`` seconds lacks to be back at ``ttl``."""
    return max(0, ttl - remaining)


class _Layout:
    """Where a saver's data lives and what it looks like: the I/O-free half of a saver."""

    def __init__(self, serde: SerializerProtocol) -> None:
        self.serde = serde

    # -- keys -----------------------------------------------------------------------

    @staticmethod
    def thread_pattern(thread: str) -> str:
        return keys.pattern(PREFIX, thread)

    @staticmethod
    def namespace_pattern(thread: str, ns: str) -> str:
        return keys.pattern(PREFIX, thread, CHECKPOINT, ns)

    @staticmethod
    def all_pattern() -> str:
        return keys.key(PREFIX) + keys.SEP + "*"

    @staticmethod
    def checkpoint_key(thread: str, ns: str, checkpoint_id: str) -> str:
        return keys.key(PREFIX, thread, CHECKPOINT, ns, checkpoint_id)

    @staticmethod
    def blob_key(thread: str, ns: str, channel: str, version: object) -> str:
        return keys.key(PREFIX, thread, BLOB, ns, channel, str(version))

    @staticmethod
    def parse(stored: str) -> tuple[str, str, str, list[str]] | None:
        """``(thread, kind, ns, rest)`` of a key this layout made, else None."""
        parts = keys.split(stored)
        if len(parts) < 5 or parts[0] != PREFIX or parts[2] not in {CHECKPOINT, BLOB}:
            return None
        return parts[1], parts[2], parts[3], parts[4:]

    @staticmethod
    def rethread(stored: str, target: str) -> str:
        """The key ``stored`` would have in thread ``target``."""
        parts = keys.split(stored)
        parts[1] = target
        return keys.key(*parts)

    def checkpoints(self, found: Iterable[str]) -> list[tuple[str, str, str]]:
        """The ``(thread, ns, id)`` of the checkpoint keys among ``found``, newest first.

        Sorted by thread and namespace, then by id from newest to oldest (LangGraph's
        ids sort by time); a key a listing returned twice counts once.
        """
        seen: set[tuple[str, str, str]] = set()
        for stored in found:
            parsed = self.parse(stored)
            if parsed is not None and parsed[1] == CHECKPOINT and len(parsed[3]) == 1:
                seen.add((parsed[0], parsed[2], parsed[3][0]))
        ordered = sorted(seen, key=lambda t: t[2], reverse=True)
        return sorted(ordered, key=lambda t: (t[0], t[1]))

    # -- documents ------------------------------------------------------------------

    def put_plan(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> tuple[str, str, Doc, list[tuple[str, Typed]]]:
        """``(thread, checkpoint key, document patch, new channel values)`` of one put."""
        conf = config["configurable"]
        thread: str = conf["thread_id"]
        ns: str = conf.get("checkpoint_ns", "")
        stripped: dict[str, Any] = dict(checkpoint)
        values: dict[str, Any] = stripped.pop("channel_values", {}) or {}
        blobs = [
            (
                self.blob_key(thread, ns, channel, version),
                _typed(self.serde.dumps_typed(values[channel]))
                if channel in values
                else {"t": "empty", "b": ""},
            )
            for channel, version in new_versions.items()
        ]
        doc: Doc = {
            "checkpoint": _typed(self.serde.dumps_typed(stripped)),
            "metadata": _typed(self.serde.dumps_typed(get_checkpoint_metadata(config, metadata))),
            # A merge patch removes a key set to null: a root checkpoint has no parent.
            "parent": conf.get("checkpoint_id"),
        }
        return thread, self.checkpoint_key(thread, ns, checkpoint["id"]), doc, blobs

    def writes_patch(
        self, stored: Doc, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str
    ) -> dict[str, Doc]:
        """The writes to merge into a checkpoint whose document is ``stored``.

        A regular write (index >= 0) already stored for the task and index is kept,
        as LangGraph expects of a retried task; a special one (negative index) replaces.
        """
        existing = stored.get("writes") or {}
        patch: dict[str, Doc] = {}
        for position, (channel, value) in enumerate(writes):
            idx = WRITES_IDX_MAP.get(channel, position)
            name = f"{task_id},{idx}"
            if idx >= 0 and name in existing:
                continue
            patch[name] = {
                "task": task_id,
                "channel": channel,
                "value": _typed(self.serde.dumps_typed(value)),
                "path": task_path,
                "idx": idx,
            }
        return patch

    def load(self, doc: Doc) -> tuple[dict[str, Any], CheckpointMetadata] | None:
        """The checkpoint (without channel values) and metadata a document holds."""
        if "checkpoint" not in doc:
            return None  # writes to a checkpoint never put
        checkpoint: dict[str, Any] = self.serde.loads_typed(_pair(doc["checkpoint"]))
        metadata: CheckpointMetadata = self.serde.loads_typed(_pair(doc["metadata"]))
        return checkpoint, metadata

    def blob_keys(self, thread: str, ns: str, checkpoint: dict[str, Any]) -> dict[str, str]:
        """Channel -> key of the value each channel of ``checkpoint`` has at its version."""
        versions: dict[str, Any] = checkpoint.get("channel_versions") or {}
        return {ch: self.blob_key(thread, ns, ch, v) for ch, v in versions.items()}

    def values(self, blobs: dict[str, Any]) -> dict[str, Any]:
        """Channel values from the blob documents read (missing and empty ones left out)."""
        return {
            ch: self.serde.loads_typed(_pair(typed))
            for ch, typed in blobs.items()
            if isinstance(typed, dict) and typed.get("t") != "empty"
        }

    def make_tuple(
        self,
        where: tuple[str, str, str],
        doc: Doc,
        loaded: tuple[dict[str, Any], CheckpointMetadata],
        values: dict[str, Any],
    ) -> CheckpointTuple:
        """The CheckpointTuple of a document, its loaded checkpoint and channel values."""
        thread, ns, checkpoint_id = where
        checkpoint, metadata = loaded
        writes = sorted(
            (doc.get("writes") or {}).values(),
            key=lambda w: writes_sort_key(w["path"], w["task"], w["idx"]),
        )
        parent = doc.get("parent")
        full: Checkpoint = {**checkpoint, "channel_values": values}  # type: ignore[typeddict-item]
        return CheckpointTuple(
            config=_config(thread, ns, checkpoint_id),
            checkpoint=full,
            metadata=metadata,
            parent_config=_config(thread, ns, parent) if parent else None,
            pending_writes=[
                (w["task"], w["channel"], self.serde.loads_typed(_pair(w["value"]))) for w in writes
            ],
        )

    @staticmethod
    def wanted(
        found: list[tuple[str, str, str]], config: RunnableConfig | None, before: str | None
    ) -> list[tuple[str, str, str]]:
        """The checkpoints a listing may yield, by namespace, id and ``before``, in order."""
        conf = config["configurable"] if config else {}
        ns = conf.get("checkpoint_ns")
        checkpoint_id = conf.get("checkpoint_id")
        return [
            t
            for t in found
            if (ns is None or t[1] == ns)
            and (not checkpoint_id or t[2] == checkpoint_id)
            and (not before or t[2] < before)
        ]

    @staticmethod
    def matches(metadata: CheckpointMetadata, wanted: dict[str, Any] | None) -> bool:
        """Whether ``metadata`` has every key of the filter with the value given."""
        got: dict[str, Any] = dict(metadata)
        return not wanted or all(got.get(k) == v for k, v in wanted.items())


def _check_ttl(ttl: int | None) -> int | None:
    if ttl is None:
        return None
    if not isinstance(ttl, int) or isinstance(ttl, bool):
        raise TypeError(f"ttl must be an int (seconds) or None, got {type(ttl).__name__}")
    if ttl < 1:
        raise ValueError(f"ttl must be a positive number of seconds, got {ttl}")
    return ttl


# -- the flows: every saver operation once, as a plan of Stash calls ------------------
#
# A flow is a plan (stashd.langgraph.plans): it yields the Stash calls it needs and is
# sent their answers, or thrown the error one raised; the blocking and the awaited
# saver differ only in how they answer (plans.run and plans.arun). So the order of the
# writes, the retry of a lost race and the TTL rule exist once.

Flow = Plan[T]


#: A write that found its document made and gone again every round.
_CONTENDED: Final = (
    "checkpoint document changed under {attempts} attempts in a row; nothing written"
)


class _Flows:
    """The operations of a checkpointer on a Stash, whatever runs the Stash's calls."""

    def __init__(self, layout: _Layout, ttl: int | None, refresh_on_read: bool) -> None:
        self.layout = layout
        self.ttl = ttl
        self.refresh_on_read = refresh_on_read
        # The Stash's default TTL, learnt from the first key written when ``ttl`` is None.
        self.default_ttl: int | None = None

    # -- TTL --------------------------------------------------------------------------

    def refresh(self, thread: str, written: str) -> Flow[None]:
        """Extend every key of ``thread`` back to the full TTL (``written`` is one of them)."""
        ttl = self.ttl
        if ttl is None:
            if self.default_ttl is None:
                self.default_ttl = yield from call("ttl", written)
            ttl = self.default_ttl
        if ttl is None:
            return  # the key written is gone already, and so is its thread
        cursor: str | None = None
        while True:
            page = yield from call(
                "memories", self.layout.thread_pattern(thread), cursor=cursor, limit=PAGE
            )
            for memory in page.memories:
                if seconds := shortfall(ttl, memory.ttl_remaining):
                    try:
                        yield from call("extend", memory.id, seconds)
                    except InvalidTTL:
                        # The seconds left are rounded: one more than the maximum can be
                        # asked for by a thread whose TTL is the maximum.
                        if seconds > 1:
                            yield from call("extend", memory.id, seconds - 1)
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    # -- reading ----------------------------------------------------------------------

    def read(
        self, where: tuple[str, str, str], wanted: dict[str, Any] | None = None
    ) -> Flow[CheckpointTuple | None]:
        """The checkpoint at ``where`` with its values and writes, if its metadata matches."""
        doc = yield from call("get", self.layout.checkpoint_key(*where))
        loaded = None if doc is None else self.layout.load(doc)
        if doc is None or loaded is None or not self.layout.matches(loaded[1], wanted):
            return None
        blobs: dict[str, Any] = {}
        for channel, stored in self.layout.blob_keys(where[0], where[1], loaded[0]).items():
            blobs[channel] = yield from call("get", stored)
        return self.layout.make_tuple(where, doc, loaded, self.layout.values(blobs))

    def get_tuple(self, config: RunnableConfig) -> Flow[CheckpointTuple | None]:
        """The checkpoint ``config`` names, or the thread's latest in its namespace."""
        conf = config["configurable"]
        thread: str = conf["thread_id"]
        ns: str = conf.get("checkpoint_ns", "")
        checkpoint_id = get_checkpoint_id(config)
        if not checkpoint_id:
            found = self.layout.checkpoints(
                (yield from call("keys", self.layout.namespace_pattern(thread, ns)))
            )
            if not found:
                return None
            checkpoint_id = found[0][2]
        result = yield from self.read((thread, ns, checkpoint_id))
        if result is not None and self.refresh_on_read:
            yield from self.refresh(thread, self.layout.checkpoint_key(thread, ns, checkpoint_id))
        return result

    def listing(
        self,
        config: RunnableConfig | None,
        wanted: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> Flow[list[CheckpointTuple]]:
        """Checkpoints newest first: of a thread (and namespace) or of every thread."""
        pattern = (
            self.layout.thread_pattern(config["configurable"]["thread_id"])
            if config
            else self.layout.all_pattern()
        )
        found = self.layout.checkpoints((yield from call("keys", pattern)))
        before_id = get_checkpoint_id(before) if before else None
        listed: list[CheckpointTuple] = []
        for where in self.layout.wanted(found, config, before_id):
            if limit is not None and len(listed) >= limit:
                break
            result = yield from self.read(where, wanted)
            if result is not None:
                listed.append(result)
        return listed

    # -- writing ----------------------------------------------------------------------

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> Flow[RunnableConfig]:
        """Store the new channel values, then the checkpoint that reads them; extend."""
        thread, stored, doc, blobs = self.layout.put_plan(
            config, checkpoint, metadata, new_versions
        )
        for blob_key, value in blobs:
            yield from call("set", blob_key, value, ttl=self.ttl)
        # Merged into a document that exists, so writes stored before a re-put stay; made
        # only where none is (add: SET NX), so a put_writes that made it meanwhile (LangGraph
        # saves a step's writes and its checkpoint from different threads) is merged into.
        fresh = {k: v for k, v in doc.items() if v is not None}
        for _ in range(WRITE_ATTEMPTS):
            if (yield from call("update", stored, merge=doc)) is not None:
                break
            if (yield from call("add", stored, fresh, ttl=self.ttl)):
                break
        else:  # made and gone again, round after round: the Stash is not keeping it
            raise RuntimeError(_CONTENDED.format(attempts=WRITE_ATTEMPTS))
        yield from self.refresh(thread, stored)
        return _config(thread, config["configurable"].get("checkpoint_ns", ""), checkpoint["id"])

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str,
    ) -> Flow[None]:
        """Store a task's writes for a checkpoint in one versioned merge: all or none."""
        conf = config["configurable"]
        thread: str = conf["thread_id"]
        stored = self.layout.checkpoint_key(
            thread, conf.get("checkpoint_ns", ""), conf["checkpoint_id"]
        )
        for attempt in range(WRITE_ATTEMPTS):
            memory = yield from call("recall", stored, with_meta=True)
            patch = self.layout.writes_patch(
                {} if memory is None else memory.data, writes, task_id, task_path
            )
            if not patch:
                break
            if memory is None:
                # Made only where none is: a put (or another task's writes) that made it
                # meanwhile sends this round back to merge into what is there.
                if (yield from call("add", stored, {"writes": patch}, ttl=self.ttl)):
                    break
                if attempt == WRITE_ATTEMPTS - 1:
                    raise RuntimeError(_CONTENDED.format(attempts=WRITE_ATTEMPTS))
                continue
            try:
                yield from call(
                    "update", stored, merge={"writes": patch}, if_version=memory.version
                )
                break
            except Conflict:
                if attempt == WRITE_ATTEMPTS - 1:
                    raise
        yield from self.refresh(thread, stored)

    # -- removing and copying ---------------------------------------------------------

    def thread_keys(self, thread: str) -> Flow[list[str]]:
        """Every key of a thread, each once."""
        found = yield from call("keys", self.layout.thread_pattern(thread))
        return list(dict.fromkeys(found))

    def delete_thread(self, thread: str) -> Flow[None]:
        """Remove every checkpoint, write and channel value of a thread."""
        found = yield from self.thread_keys(thread)
        if found:
            yield from call("forget", *found)

    def copy_thread(self, source: str, target: str) -> Flow[None]:
        """Copy every checkpoint, write and channel value of a thread to another."""
        copied: str | None = None
        for stored in (yield from self.thread_keys(source)):
            value = yield from call("get", stored)
            if value is None:
                continue
            copied = self.layout.rethread(stored, target)
            yield from call("set", copied, value, ttl=self.ttl)
        if copied is not None:
            yield from self.refresh(target, copied)

    def sweep(self, thread: str, keep: set[str] | None) -> Flow[None]:
        """Forget the thread's checkpoints not in ``keep`` (None: all kept), then stale values.

        A channel value is stale when no remaining checkpoint of the thread reads it.
        """
        found = yield from self.thread_keys(thread)
        gone: list[str] = []
        needed: set[str] = set()
        for where in self.layout.checkpoints(found):
            stored = self.layout.checkpoint_key(*where)
            if keep is not None and stored not in keep:
                gone.append(stored)
                continue
            doc = yield from call("get", stored)
            loaded = None if doc is None else self.layout.load(doc)
            if loaded is not None:
                needed.update(self.layout.blob_keys(where[0], where[1], loaded[0]).values())
        for stored in found:
            parsed = self.layout.parse(stored)
            if parsed is not None and parsed[1] == BLOB and stored not in needed:
                gone.append(stored)
        if gone:
            yield from call("forget", *gone)

    def prune(self, thread_ids: Sequence[str], strategy: str) -> Flow[None]:
        """Keep each namespace's latest checkpoint (``keep_latest``) or none (``delete``)."""
        if strategy not in {"keep_latest", "delete"}:
            raise ValueError(f"strategy must be 'keep_latest' or 'delete', got {strategy!r}")
        for thread in thread_ids:
            if strategy == "delete":
                yield from self.delete_thread(thread)
                continue
            latest: dict[str, str] = {}
            for where in self.layout.checkpoints((yield from self.thread_keys(thread))):
                latest.setdefault(where[1], self.layout.checkpoint_key(*where))
            yield from self.sweep(thread, set(latest.values()))

    def delete_for_runs(self, run_ids: Sequence[str]) -> Flow[None]:
        """Remove the checkpoints (writes included) whose metadata's ``run_id`` is listed."""
        runs = set(run_ids)
        if not runs:
            return
        touched: set[str] = set()
        found = yield from call("keys", self.layout.all_pattern())
        for where in self.layout.checkpoints(found):
            stored = self.layout.checkpoint_key(*where)
            doc = yield from call("get", stored)
            loaded = None if doc is None else self.layout.load(doc)
            if loaded is not None and dict(loaded[1]).get("run_id") in runs:
                yield from call("forget", stored)
                touched.add(where[0])
        for thread in sorted(touched):
            yield from self.sweep(thread, None)


class _StashCheckpointer(BaseCheckpointSaver[str]):
    """What both savers share: the TTL settings, the flows, and string versions."""

    def __init__(
        self,
        *,
        ttl: int | None = None,
        refresh_on_read: bool = False,
        serde: SerializerProtocol | None = None,
    ) -> None:
        super().__init__(serde=serde)
        self.ttl = _check_ttl(ttl)
        self.refresh_on_read = refresh_on_read
        self._flows = _Flows(_Layout(self.serde), self.ttl, refresh_on_read)

    def get_next_version(self, current: str | None, channel: None) -> str:  # noqa: ARG002 - LangGraph's signature
        """A version that sorts after ``current`` (string versions, as InMemorySaver's)."""
        return next_version(current)


class StashSaver(_StashCheckpointer):
    """A LangGraph checkpointer on a :class:`~stashd.Stash`: checkpoints that expire.

    ``ttl`` is the seconds a thread lives after its last write (None: the Stash's
    default TTL); ``refresh_on_read`` makes ``get_tuple`` extend the thread too. Any
    Stash works: embedded SQLite or memory, the Redis backend, or a remote stashd.
    The async methods run the blocking ones in a worker thread.

    Example::

        from stashd import Stash
        from stashd.langgraph import StashSaver

        saver = StashSaver(Stash(), ttl=3600)
        graph = builder.compile(checkpointer=saver)
    """

    def __init__(
        self,
        stash: Stash,
        *,
        ttl: int | None = None,
        refresh_on_read: bool = False,
        serde: SerializerProtocol | None = None,
    ) -> None:
        super().__init__(ttl=ttl, refresh_on_read=refresh_on_read, serde=serde)
        self.stash = stash

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint ``config`` names, or the latest of its thread and namespace."""
        return run(self.stash, self._flows.get_tuple(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,  # noqa: A002 - LangGraph's argument name
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first, of a thread or all, by metadata, ``before``, ``limit``."""
        yield from run(self.stash, self._flows.listing(config, filter, before, limit))

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store a checkpoint and its new channel values, and extend its thread."""
        return run(self.stash, self._flows.put(config, checkpoint, metadata, new_versions))

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store a task's writes for a checkpoint, all or none, and extend its thread."""
        run(self.stash, self._flows.put_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        """Remove every checkpoint, write and channel value of a thread."""
        run(self.stash, self._flows.delete_thread(thread_id))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy a thread's checkpoints, writes and values to another thread."""
        run(self.stash, self._flows.copy_thread(source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Keep only each namespace's latest checkpoint (``keep_latest``), or none (``delete``)."""
        run(self.stash, self._flows.prune(thread_ids, strategy))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Remove the checkpoints, with their writes, of the given runs."""
        run(self.stash, self._flows.delete_for_runs(run_ids))

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """:meth:`get_tuple` in a worker thread."""
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,  # noqa: A002 - LangGraph's argument name
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """:meth:`list` in a worker thread, its results yielded here."""
        flow = self._flows.listing(config, filter, before, limit)
        for item in await asyncio.to_thread(run, self.stash, flow):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """:meth:`put` in a worker thread."""
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """:meth:`put_writes` in a worker thread."""
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        """:meth:`delete_thread` in a worker thread."""
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """:meth:`copy_thread` in a worker thread."""
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """:meth:`prune` in a worker thread."""
        await asyncio.to_thread(run, self.stash, self._flows.prune(thread_ids, strategy))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """:meth:`delete_for_runs` in a worker thread."""
        await asyncio.to_thread(self.delete_for_runs, run_ids)


class AsyncStashSaver(_StashCheckpointer):
    """:class:`StashSaver` on an :class:`~stashd.AsyncStash`: the async methods are native.

    An AsyncStash belongs to one event loop, and so does this saver: the loop it was
    made on, else the one of its first async call. The blocking methods (``get_tuple``,
    ``put``, ...) run the async ones on that loop and wait, so they work from any
    other thread (a graph's sync ``invoke`` in a worker); called on the loop's own
    thread they would wait for themselves, and raise ``RuntimeError``
    saying to use the async methods instead.

    Example::

        from stashd import AsyncStash
        from stashd.langgraph import AsyncStashSaver

        saver = AsyncStashSaver(AsyncStash(), ttl=3600)
        graph = builder.compile(checkpointer=saver)
        await graph.ainvoke(inputs, {"configurable": {"thread_id": "t1"}})
    """

    def __init__(
        self,
        stash: AsyncStash,
        *,
        ttl: int | None = None,
        refresh_on_read: bool = False,
        serde: SerializerProtocol | None = None,
    ) -> None:
        super().__init__(ttl=ttl, refresh_on_read=refresh_on_read, serde=serde)
        self.stash = stash
        try:
            self.loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # made outside a loop: the first async call sets it
            self.loop = None

    async def _do(self, flow: Flow[T]) -> T:
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        return await arun(self.stash, flow)

    def _wait(self, flow: Flow[T], name: str) -> T:
        """Run ``flow`` on the saver's loop from another thread, and wait for it."""
        refusal = (
            f"AsyncStashSaver.{name} blocks, which its event loop's thread cannot do: "
            f"use await saver.a{name}(...), or call {name} from another thread while "
            "the saver's loop runs"
        )
        return wait_on(self.loop, arun(self.stash, flow), refusal)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint ``config`` names, or the latest of its thread and namespace."""
        return await self._do(self._flows.get_tuple(config))

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,  # noqa: A002 - LangGraph's argument name
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Checkpoints newest first, of a thread or all, by metadata, ``before``, ``limit``."""
        for item in await self._do(self._flows.listing(config, filter, before, limit)):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store a checkpoint and its new channel values, and extend its thread."""
        return await self._do(self._flows.put(config, checkpoint, metadata, new_versions))

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store a task's writes for a checkpoint, all or none, and extend its thread."""
        await self._do(self._flows.put_writes(config, writes, task_id, task_path))

    async def adelete_thread(self, thread_id: str) -> None:
        """Remove every checkpoint, write and channel value of a thread."""
        await self._do(self._flows.delete_thread(thread_id))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy a thread's checkpoints, writes and values to another thread."""
        await self._do(self._flows.copy_thread(source_thread_id, target_thread_id))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Keep only each namespace's latest checkpoint (``keep_latest``), or none (``delete``)."""
        await self._do(self._flows.prune(thread_ids, strategy))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Remove the checkpoints, with their writes, of the given runs."""
        await self._do(self._flows.delete_for_runs(run_ids))

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """:meth:`aget_tuple` from another thread than the saver's loop."""
        return self._wait(self._flows.get_tuple(config), "get_tuple")

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,  # noqa: A002 - LangGraph's argument name
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """:meth:`alist` from another thread than the saver's loop."""
        yield from self._wait(self._flows.listing(config, filter, before, limit), "list")

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """:meth:`aput` from another thread than the saver's loop."""
        return self._wait(self._flows.put(config, checkpoint, metadata, new_versions), "put")

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """:meth:`aput_writes` from another thread than the saver's loop."""
        self._wait(self._flows.put_writes(config, writes, task_id, task_path), "put_writes")

    def delete_thread(self, thread_id: str) -> None:
        """:meth:`adelete_thread` from another thread than the saver's loop."""
        self._wait(self._flows.delete_thread(thread_id), "delete_thread")

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """:meth:`acopy_thread` from another thread than the saver's loop."""
        self._wait(self._flows.copy_thread(source_thread_id, target_thread_id), "copy_thread")

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """:meth:`aprune` from another thread than the saver's loop."""
        self._wait(self._flows.prune(thread_ids, strategy), "prune")

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """:meth:`adelete_for_runs` from another thread than the saver's loop."""
        self._wait(self._flows.delete_for_runs(run_ids), "delete_for_runs")
