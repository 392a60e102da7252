"""Plans of Stash calls: each LangGraph operation written once, run blocking or awaited.

A plan is a generator that yields the :class:`Call` (or list of independent calls) it
needs next and is sent each answer; an error of a call is thrown into it at that
point, so ``except Conflict`` in a plan is a retry loop. :func:`run` answers a plan's
calls on a ``Stash``, :func:`arun` awaits them on an ``AsyncStash`` (a list's calls
together, a bounded number at once), so the checkpointer and the store keep their
rules in one place whichever client they are given. :func:`wait_on` lets the blocking
methods of an async checkpointer or store run on its loop from another thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeVar

if TYPE_CHECKING:
    from stashd.client import AsyncStash, Stash

T = TypeVar("T")

#: Calls of one step an awaited plan has in flight at most: a step of many independent
#: calls (a search's reads) must not open one connection each to a remote daemon.
CONCURRENT_CALLS: Final = 32


@dataclass(frozen=True, slots=True)
class Call:
    """One call of a Stash method a plan needs; ``keys`` is answered as a list.

    An exception of a ``tolerate`` type is answered as the exception instead of being
    thrown into the plan (for a step of many calls, where one missing is no failure).
    """

    method: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    tolerate: tuple[type[Exception], ...] = ()


#: What a plan yields: one call, or a list of independent ones answered as a list.
Step = Call | list[Call]
Plan = Generator[Step, Any, T]


def call(method: str, *args: Any, **kwargs: Any) -> Plan[Any]:  # noqa: ANN401 - its answer
    """A plan of one Stash call, which returns its answer (``yield from`` it in a plan)."""
    return (yield Call(method, args, kwargs))


def run(stash: Stash, plan: Plan[T]) -> T:
    """Answer a plan's calls on a blocking Stash; its result."""
    answer: Any = None
    error: Exception | None = None
    while True:
        try:
            step = plan.throw(error) if error is not None else plan.send(answer)
        except StopIteration as done:
            result: T = done.value
            return result
        error = None
        try:
            answer = (
                [_call(stash, c) for c in step] if isinstance(step, list) else _call(stash, step)
            )
        except Exception as exc:  # noqa: BLE001 - thrown into the plan, which decides
            error = exc


async def arun(stash: AsyncStash, plan: Plan[T]) -> T:
    """Answer a plan's calls on an AsyncStash, a list's calls together; its result."""
    room = asyncio.Semaphore(CONCURRENT_CALLS)

    async def bounded(one: Call) -> Any:  # noqa: ANN401 - the call's answer
        async with room:
            return await _acall(stash, one)

    answer: Any = None
    error: Exception | None = None
    while True:
        try:
            step = plan.throw(error) if error is not None else plan.send(answer)
        except StopIteration as done:
            result: T = done.value
            return result
        error = None
        try:
            if isinstance(step, list):
                answer = list(await asyncio.gather(*(bounded(c) for c in step)))
            else:
                answer = await _acall(stash, step)
        except Exception as exc:  # noqa: BLE001 - thrown into the plan, which decides
            error = exc


def _call(stash: Stash, one: Call) -> Any:  # noqa: ANN401 - whatever the method returns
    try:
        if one.method == "keys":
            return list(stash.keys(*one.args))
        return getattr(stash, one.method)(*one.args, **one.kwargs)
    except one.tolerate as exc:
        return exc


async def _acall(stash: AsyncStash, one: Call) -> Any:  # noqa: ANN401 - whatever it returns
    try:
        if one.method == "keys":
            return [k async for k in stash.keys(*one.args)]
        return await getattr(stash, one.method)(*one.args, **one.kwargs)
    except one.tolerate as exc:
        return exc


def wait_on(
    loop: asyncio.AbstractEventLoop | None, work: Coroutine[Any, Any, T], refusal: str
) -> T:
    """Run ``work`` on ``loop`` and wait for it, from a thread that is not the loop's.

    On the loop's own thread (or with no running loop) waiting could never end: the
    work is dropped and ``RuntimeError(refusal)`` says what to call instead.
    """
    if loop is None or loop.is_closed() or not loop.is_running() or _on_thread_of(loop):
        work.close()
        raise RuntimeError(refusal)
    return asyncio.run_coroutine_threadsafe(work, loop).result()


def _on_thread_of(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether this thread is running ``loop`` (so waiting for it here would never end)."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:  # no loop runs on this thread
        return False
