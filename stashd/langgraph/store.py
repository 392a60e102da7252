"""LangGraph's long-term memory store (``BaseStore``) on a Stash, where every item expires.

Key layout: an item is one Stash key, ``langgraph:store:<ns1>:...:<nsN>:<key>``, its
parts encoded by :mod:`stashd.langgraph.keys`, so the last part is always the item's key
and the ones before it its namespace; a namespace prefix is one glob
(``langgraph:store:<ns1>:*``). The value is a JSON object
``{"value": ..., "created_at": ISO, "updated_at": ISO, "ttl": seconds}``.

TTL rule: TTLs are LangGraph's minutes, rounded up to whole seconds. A put without a
``ttl`` takes ``TTLConfig["default_ttl"]``; with neither, Stash has no "forever", so
the item gets the Stash's own default TTL (learnt once per store from the first such
put). The item keeps its TTL in ``"ttl"``, and a read with ``refresh_ttl`` (by default
``TTLConfig["refresh_on_read"]``, itself True by default) sets the time it has left back
to that TTL. A TTL over the Stash's maximum raises Stash's ``InvalidTTL``; an expired
item is never returned, listed or counted.

All the logic is written once as plans of the Stash calls they need
(:mod:`stashd.langgraph.plans`): :class:`StashStore` runs them on a ``Stash``,
:class:`AsyncStashStore` awaits them on an ``AsyncStash``, running a step's
independent calls concurrently.
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, TypeVar

from langgraph.store.base import (
    BaseStore,
    GetOp,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
    validate_op_namespace,
)

from stashd.errors import Conflict
from stashd.langgraph.keys import key as make_key
from stashd.langgraph.keys import pattern, split
from stashd.langgraph.plans import Call, Plan, arun, run, wait_on

if TYPE_CHECKING:
    from collections.abc import Coroutine, Iterable

    from stashd.client import AsyncStash, Memory, Stash

__all__ = ["AsyncStashStore", "StashStore"]

#: The parts every item key starts with: keeps the store's keys apart from the rest.
HEAD: Final = ("langgraph", "store")
#: Keys deleted per FORGET call by :meth:`StashStore.delete_namespace`: bounds a request.
FORGET_CHUNK: Final = 500
#: What AsyncStashStore's blocking methods say where they cannot wait.
_BLOCKING_REFUSED: Final = (
    "AsyncStashStore's blocking methods run on the event loop it is used on, from another "
    "thread: not before it has run on an event loop yet, nor on that event loop's thread; "
    "await its a-methods (abatch, aget, aput, ...) or use StashStore"
)
#: The filter operators, as LangGraph's InMemoryStore and PostgresStore take them.
OPERATORS: Final = frozenset({"$eq", "$ne", "$gt", "$gte", "$lt", "$lte"})

_T = TypeVar("_T")


# -- the rules both stores share: keys, documents, TTLs, filters, namespaces -----------


def _item_key(namespace: tuple[str, ...], key: str) -> str:
    return make_key(*HEAD, *namespace, key)


def _under(prefix: tuple[str, ...]) -> str:
    """The glob of every item whose namespace starts with ``prefix``."""
    return pattern(*HEAD, *prefix)


def _parse_key(stored: str) -> tuple[tuple[str, ...], str] | None:
    """The namespace and key an item key holds; None for a key of another layout."""
    parts = split(stored)
    if len(parts) < len(HEAD) + 2 or tuple(parts[: len(HEAD)]) != HEAD:
        return None
    return tuple(parts[len(HEAD) : -1]), parts[-1]


def _seconds(minutes: float) -> int:
    """LangGraph's minutes as Stash's whole seconds, rounded up (never shorter than asked)."""
    if isinstance(minutes, bool) or not isinstance(minutes, int | float) or not minutes > 0:
        msg = f"ttl must be a positive number of minutes, got {minutes!r}"
        raise ValueError(msg)
    # Rounded to microseconds first so that 1/60 minute is 1 second, not 2.
    return math.ceil(round(minutes * 60, 6))


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _document(value: dict[str, Any], created_at: str, now: str, ttl: int | None) -> dict[str, Any]:
    return {"value": value, "created_at": created_at, "updated_at": now, "ttl": ttl}


def _is_document(data: object) -> bool:
    return isinstance(data, dict) and isinstance(data.get("value"), dict)


def _item(namespace: tuple[str, ...], key: str, doc: dict[str, Any]) -> Item:
    return Item(
        value=doc["value"],
        key=key,
        namespace=namespace,
        created_at=datetime.fromisoformat(doc["created_at"]),
        updated_at=datetime.fromisoformat(doc["updated_at"]),
    )


def _refresh(stored: str, memory: Memory) -> Call | None:
    """The call that sets an item's time left back to its own TTL, or None when it is full.

    It applies only at the version read, so a put that replaced the item meanwhile (with
    a TTL of its own) is left alone.
    """
    ttl = memory.data.get("ttl")
    if not isinstance(ttl, int) or ttl - memory.ttl_remaining < 1:
        return None
    extra = ttl - memory.ttl_remaining
    kwargs: dict[str, object] = {"extra_seconds": extra, "if_version": memory.version}
    return Call("update", (stored,), kwargs, tolerate=(Conflict,))


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _ordering(value: object, operand: object) -> int | None:
    """-1, 0 or 1 for numbers with numbers and text with text; None for anything else."""
    if isinstance(value, int | float) and isinstance(operand, int | float):
        if _number(value) and _number(operand):
            return (value > operand) - (value < operand)
        return None
    if isinstance(value, str) and isinstance(operand, str):
        return (value > operand) - (value < operand)
    return None


def _operator(value: object, operator: str, operand: object) -> bool:
    """One ``$`` operator; ordering compares numbers with numbers and text with text only."""
    if operator == "$eq":
        return value == operand
    if operator == "$ne":
        return value != operand
    if operator not in OPERATORS:
        msg = f"filter operator must be one of {', '.join(sorted(OPERATORS))}, got {operator!r}"
        raise ValueError(msg)
    order = _ordering(value, operand)
    if order is None:
        return False
    return {"$gt": order > 0, "$gte": order >= 0, "$lt": order < 0, "$lte": order <= 0}[operator]


def _matches(value: object, wanted: object) -> bool:
    """InMemoryStore's filter rule: operators, nested objects, lists element by element."""
    if isinstance(wanted, dict):
        if any(str(k).startswith("$") for k in wanted):
            return all(_operator(value, op, operand) for op, operand in wanted.items())
        if not isinstance(value, dict):
            return False
        return all(_matches(value.get(k), v) for k, v in wanted.items())
    if isinstance(wanted, list | tuple):
        return (
            isinstance(value, list | tuple)
            and len(value) == len(wanted)
            and all(_matches(v, w) for v, w in zip(value, wanted, strict=True))
        )
    return value == wanted


def _passes(item: Item, wanted: dict[str, Any] | None) -> bool:
    return not wanted or all(_matches(item.value.get(k), v) for k, v in wanted.items())


def _condition_holds(condition: MatchCondition, namespace: tuple[str, ...]) -> bool:
    """A prefix or suffix condition, ``"*"`` matching any one label."""
    path = tuple(condition.path)
    if len(namespace) < len(path):
        return False
    if condition.match_type == "prefix":
        labels = namespace[: len(path)]
    elif condition.match_type == "suffix":
        labels = namespace[len(namespace) - len(path) :]
    else:
        msg = f"match_type must be 'prefix' or 'suffix', got {condition.match_type!r}"
        raise ValueError(msg)
    return all(p in ("*", label) for p, label in zip(path, labels, strict=True))


def _literal_prefix(conditions: tuple[MatchCondition, ...]) -> tuple[str, ...]:
    """The labels every listed namespace must start with: a prefix condition's, up to a ``*``."""
    for condition in conditions:
        if condition.match_type == "prefix":
            labels: list[str] = []
            for label in condition.path:
                if label == "*":
                    break
                labels.append(label)
            return tuple(labels)
    return ()


def _refuse_index(op: PutOp) -> None:
    if op.index is not None and op.index is not False:
        msg = (
            f"a Stash store has no vector index: put(index=...) cannot be honoured, "
            f"got index={op.index!r} (leave it None or False)"
        )
        raise NotImplementedError(msg)


def _refuse_query(op: SearchOp) -> None:
    if op.query is not None:
        msg = (
            f"a Stash store has no vector index: search(query=...) cannot be honoured, "
            f"got query={op.query!r}; use filter= instead"
        )
        raise NotImplementedError(msg)


# -- the plans -------------------------------------------------------------------------


class _Plans:
    """The store's operations as plans over the Stash API; what both stores share."""

    supports_ttl: bool = True

    def __init__(self, ttl: TTLConfig | None) -> None:
        self.ttl_config = ttl
        default = None if ttl is None else ttl.get("default_ttl")
        # Checked when the store is made, not at the first put.
        self._default_ttl = None if default is None else _seconds(default)
        # The Stash's own default TTL, once a put without any TTL has shown it.
        self._stash_default: int | None = None

    def _plan_batch(self, ops: Iterable[Op]) -> Plan[list[Result]]:
        """Reads in order, on the data as it was; then the puts, the last per item winning.

        That is InMemoryStore's order. Every op is checked before anything is written.
        """
        ops = list(ops)
        puts: dict[tuple[tuple[str, ...], str], PutOp] = {}
        for op in ops:
            validate_op_namespace(op)
            if isinstance(op, PutOp):
                if not op.namespace:  # put() checks it; a PutOp handed to batch() is not
                    msg = "Namespace cannot be empty."
                    raise InvalidNamespaceError(msg)
                _refuse_index(op)
                if op.ttl is not None:
                    _seconds(op.ttl)
            elif isinstance(op, SearchOp):
                _refuse_query(op)
            elif not isinstance(op, GetOp | ListNamespacesOp):
                msg = f"unknown operation type: {type(op).__name__}"
                raise TypeError(msg)
        results: list[Result] = []
        for op in ops:
            if isinstance(op, GetOp):
                results.append((yield from self._plan_get(op)))
            elif isinstance(op, SearchOp):
                results.append((yield from self._plan_search(op)))
            elif isinstance(op, ListNamespacesOp):
                results.append((yield from self._plan_list(op)))
            else:
                puts[op.namespace, op.key] = op
                results.append(None)
        if puts:
            yield from self._plan_puts(list(puts.values()))
        return results

    def _plan_get(self, op: GetOp) -> Plan[Item | None]:
        stored = _item_key(op.namespace, op.key)
        memory: Memory | None = yield Call("recall", (stored,), {"with_meta": True})
        if memory is None or not _is_document(memory.data):
            return None
        if op.refresh_ttl and (call := _refresh(stored, memory)) is not None:
            yield call
        return _item(op.namespace, op.key, memory.data)

    def _plan_read_all(
        self, prefix: tuple[str, ...]
    ) -> Plan[list[tuple[str, Memory, tuple[str, ...], str]]]:
        """Every live item under ``prefix``: its key, what recall read, namespace and key."""
        found: list[str] = yield Call("keys", (_under(prefix),))
        stored = sorted({k for k in found if _parse_key(k) is not None})
        calls = [Call("recall", (k,), {"with_meta": True}) for k in stored]
        memories: list[Memory | None] = (yield calls) if calls else []
        read = []
        for k, memory in zip(stored, memories, strict=True):
            parsed = _parse_key(k)
            # A key listed then expired (or deleted) before its read is simply gone.
            if memory is not None and parsed is not None and _is_document(memory.data):
                read.append((k, memory, *parsed))
        return read

    def _plan_search(self, op: SearchOp) -> Plan[list[SearchItem]]:
        """Filtered items, most recently updated first (as LangGraph's SQL stores order)."""
        read = yield from self._plan_read_all(tuple(op.namespace_prefix))
        hits = []
        for stored, memory, namespace, key in read:
            item = _item(namespace, key, memory.data)
            if _passes(item, op.filter):
                hits.append((stored, memory, item))
        hits.sort(key=lambda h: (h[2].namespace, h[2].key))
        hits.sort(key=lambda h: h[2].updated_at, reverse=True)
        page = hits[max(op.offset, 0) : max(op.offset, 0) + max(op.limit, 0)]
        if op.refresh_ttl:
            refreshes = [c for s, m, _ in page if (c := _refresh(s, m)) is not None]
            if refreshes:
                yield refreshes
        return [
            SearchItem(
                namespace=item.namespace,
                key=item.key,
                value=item.value,
                created_at=item.created_at,
                updated_at=item.updated_at,
            )
            for _, _, item in page
        ]

    def _plan_list(self, op: ListNamespacesOp) -> Plan[list[tuple[str, ...]]]:
        conditions = tuple(op.match_conditions or ())
        found: list[str] = yield Call("keys", (_under(_literal_prefix(conditions)),))
        namespaces = {parsed[0] for k in found if (parsed := _parse_key(k)) is not None}
        kept = {ns for ns in namespaces if all(_condition_holds(c, ns) for c in conditions)}
        if op.max_depth is not None:
            kept = {ns[: op.max_depth] for ns in kept}
        listed = sorted(kept)
        return listed[max(op.offset, 0) : max(op.offset, 0) + max(op.limit, 0)]

    def _plan_puts(self, puts: list[PutOp]) -> Plan[None]:
        deletes = [_item_key(op.namespace, op.key) for op in puts if op.value is None]
        writes = [op for op in puts if op.value is not None]
        if deletes:
            yield Call("forget", tuple(deletes))
        if not writes:
            return
        stored = [_item_key(op.namespace, op.key) for op in writes]
        # An item written again keeps the time it was created.
        before: list[Any] = yield [Call("get", (k,)) for k in stored]
        now = _now()
        sets: list[Call] = []
        for op, k, old in zip(writes, stored, before, strict=True):
            created = old["created_at"] if _is_document(old) else now
            ttl = self._default_ttl if op.ttl is None else _seconds(op.ttl)
            if ttl is None and self._stash_default is None:
                yield from self._plan_learn(k, dict(op.value or {}), created, now)
                continue
            ttl = self._stash_default if ttl is None else ttl
            doc = _document(dict(op.value or {}), created, now, ttl)
            sets.append(Call("set", (k, doc), {"ttl": ttl}))
        if sets:
            yield sets

    def _plan_learn(self, stored: str, value: dict[str, Any], created: str, now: str) -> Plan[None]:
        """Write an item with the Stash's default TTL, and learn that TTL from it."""
        yield Call("set", (stored, _document(value, created, now, None)), {"ttl": None})
        seconds: int | None = yield Call("ttl", (stored,))
        if seconds is None:  # gone already: there is nothing to keep the TTL with
            return
        self._stash_default = seconds
        yield Call("set", (stored, _document(value, created, now, seconds)), {"ttl": seconds})

    def _plan_delete_namespace(self, prefix: tuple[str, ...]) -> Plan[int]:
        prefix = tuple(prefix)
        if not prefix:
            msg = "delete_namespace needs a non-empty namespace prefix, got ()"
            raise ValueError(msg)
        validate_op_namespace(SearchOp(prefix))
        found: list[str] = yield Call("keys", (_under(prefix),))
        stored = sorted({k for k in found if _parse_key(k) is not None})
        chunks = [stored[i : i + FORGET_CHUNK] for i in range(0, len(stored), FORGET_CHUNK)]
        counts: list[int] = (yield [Call("forget", tuple(c)) for c in chunks]) if chunks else []
        return sum(counts)


# -- the two stores: only how a call is made differs -----------------------------------


class StashStore(_Plans, BaseStore):
    """A LangGraph ``BaseStore`` on a :class:`~stashd.Stash` (embedded, Redis or remote).

    Items always expire (see the module's TTL rule): ``ttl`` (a ``TTLConfig``) gives the
    default TTL in minutes and whether reads refresh it; an item put with no TTL at all
    gets the Stash's default TTL. ``search`` filters (``$eq $ne $gt $gte $lt $lte`` and
    plain equality, as InMemoryStore) and orders by ``updated_at``, newest first; a
    ``query`` or an ``index`` list raises NotImplementedError (there is no vector index).
    :meth:`delete_namespace` removes a whole namespace prefix. ``abatch`` runs ``batch``
    in a worker thread.

    Example::

        from stashd import Stash
        from stashd.langgraph import StashStore

        store = StashStore(Stash("memory"), ttl={"default_ttl": 60})
        store.put(("users", "u1"), "prefs", {"theme": "dark"})
        store.get(("users", "u1"), "prefs").value  # {'theme': 'dark'}
    """

    def __init__(self, stash: Stash, *, ttl: TTLConfig | None = None) -> None:
        super().__init__(ttl)
        self.stash = stash

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run ``ops``: reads in order on the data before the batch, then its puts."""
        return run(self.stash, self._plan_batch(ops))

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """:meth:`batch` in a worker thread (a ``Stash`` is safe to share between threads)."""
        return await asyncio.to_thread(self.batch, list(ops))

    def delete_namespace(self, prefix: tuple[str, ...]) -> int:
        """Delete every item whose namespace starts with ``prefix``; how many were deleted.

        One key listing and a FORGET per 500 items, no read of any value. An empty prefix
        is refused (ValueError) rather than taken to mean every item.

        Example::

            store.delete_namespace(("users", "u1"))  # 3
        """
        return run(self.stash, self._plan_delete_namespace(prefix))

    async def adelete_namespace(self, prefix: tuple[str, ...]) -> int:
        """:meth:`delete_namespace` in a worker thread."""
        return await asyncio.to_thread(self.delete_namespace, prefix)


class AsyncStashStore(_Plans, BaseStore):
    """:class:`StashStore` on an :class:`~stashd.AsyncStash`: the same rules, awaited.

    The independent calls of one step (the reads of a search, the writes of a batch)
    run concurrently. The blocking methods (``get``, ``put``, ``batch`` ...) work from
    another thread while the store's event loop runs (as a sync LangGraph node in a
    worker thread does): they run there and wait. Called on that loop's own thread, or
    before the store has seen its loop, they raise RuntimeError instead of blocking it.

    Example::

        from stashd import AsyncStash
        from stashd.langgraph import AsyncStashStore

        store = AsyncStashStore(AsyncStash("memory"))
        await store.aput(("users", "u1"), "prefs", {"theme": "dark"})
        (await store.aget(("users", "u1"), "prefs")).value  # {'theme': 'dark'}
    """

    def __init__(self, stash: AsyncStash, *, ttl: TTLConfig | None = None) -> None:
        super().__init__(ttl)
        self.stash = stash
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # made outside a loop: the first awaited call tells it
            self._loop = None

    async def _run(self, plan: Plan[_T]) -> _T:
        self._loop = asyncio.get_running_loop()  # where the blocking methods wait
        return await arun(self.stash, plan)

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """Run ``ops``: reads in order on the data before the batch, then its puts."""
        return await self._run(self._plan_batch(ops))

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """:meth:`abatch` on the store's loop, from another thread; see the class."""
        return self._blocking(self.abatch(list(ops)))

    async def adelete_namespace(self, prefix: tuple[str, ...]) -> int:
        """Delete every item whose namespace starts with ``prefix``; see StashStore's.

        Example::

            await store.adelete_namespace(("users", "u1"))  # 3
        """
        return await self._run(self._plan_delete_namespace(prefix))

    def delete_namespace(self, prefix: tuple[str, ...]) -> int:
        """:meth:`adelete_namespace` on the store's loop, from another thread."""
        return self._blocking(self.adelete_namespace(prefix))

    def _blocking(self, work: Coroutine[Any, Any, _T]) -> _T:
        return wait_on(self._loop, work, _BLOCKING_REFUSED)
