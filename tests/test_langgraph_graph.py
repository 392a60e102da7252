"""A real LangGraph StateGraph on Stash: checkpoints across invocations, an interrupt, a TTL.

No LLM: the nodes are plain Python. The graph keeps each thread's state in StashSaver and
what it learns across threads in StashStore, as an agent would, on embedded SQLite and
on the Redis backend.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime  # noqa: TC002 - LangGraph reads node annotations
from langgraph.types import Command, interrupt

from stashd import Stash
from stashd.langgraph import StashSaver, StashStore
from tests.support.servers import RedisServer


class Plan(TypedDict, total=False):
    """A thread's state: the steps done so far, and whether a person approved the plan."""

    steps: Annotated[list[str], operator.add]
    approved: bool


def plan(state: Plan, runtime: Runtime[None]) -> dict[str, Any]:
    """Remember, across threads, how many plans were made; add a step."""
    store = runtime.store
    assert store is not None
    seen = store.get(("agent", "stats"), "plans")
    count = 1 if seen is None else seen.value["count"] + 1
    store.put(("agent", "stats"), "plans", {"count": count})
    return {"steps": [f"plan {count}"]}


def approve(state: Plan) -> dict[str, Any]:
    """Stop for a person: the answer given on resume decides."""
    answer = interrupt({"question": "approve?", "steps": state["steps"]})
    return {"approved": answer == "yes", "steps": ["approved" if answer == "yes" else "rejected"]}


def build(saver: StashSaver, store: StashStore) -> Any:  # noqa: ANN401 - LangGraph's compiled graph
    graph = StateGraph(Plan)
    graph.add_node("plan", plan)
    graph.add_node("approve", approve)
    graph.add_edge(START, "plan")
    graph.add_edge("plan", "approve")
    graph.add_edge("approve", END)
    return graph.compile(checkpointer=saver, store=store)


@pytest.fixture(scope="module")
def redis_for_graph() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(params=["sqlite", "redis"])
def stash(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stash]:
    if request.param == "sqlite":
        client = Stash(path=tmp_path / "graph.db")
    else:
        server: RedisServer = request.getfixturevalue("redis_for_graph")
        server.flush()
        client = Stash(backend="redis", redis_url=server.url)
    with client:
        yield client


def test_a_thread_runs_is_interrupted_resumes_and_keeps_its_state(stash: Stash) -> None:
    """Several invocations of one thread, an interrupt and a resume, another thread beside it."""
    graph = build(StashSaver(stash, ttl=600), StashStore(stash))
    config: Any = {"configurable": {"thread_id": "thread: one/*"}}
    first = graph.invoke({"steps": ["start"]}, config)
    assert first["steps"] == ["start", "plan 1"]
    assert "__interrupt__" in first
    waiting = graph.get_state(config)
    assert waiting.next == ("approve",)
    assert waiting.tasks[0].interrupts[0].value["question"] == "approve?"

    done = graph.invoke(Command(resume="yes"), config)
    assert done["steps"] == ["start", "plan 1", "approved"]
    assert done["approved"] is True
    assert graph.get_state(config).next == ()

    # The same thread again: its state is where it was; the store counts across threads.
    again = graph.invoke({"steps": ["again"]}, config)
    assert again["steps"] == ["start", "plan 1", "approved", "again", "plan 2"]
    other: Any = {"configurable": {"thread_id": "thread-two"}}
    second = graph.invoke({"steps": ["other"]}, other)
    assert second["steps"] == ["other", "plan 3"]
    history = list(graph.get_state_history(config))
    assert len(history) >= 5
    # A new graph on the same Stash (another process, another day) resumes the thread.
    rebuilt = build(StashSaver(stash, ttl=600), StashStore(stash))
    resumed = rebuilt.invoke(Command(resume="no"), config)
    assert resumed["steps"][-1] == "rejected"
    assert rebuilt.get_state(other).next == ("approve",)


def test_a_thread_vanishes_after_its_ttl(stash: Stash) -> None:
    """With a TTL of two seconds, the whole thread is gone once it has passed, without a sweep."""
    graph = build(StashSaver(stash, ttl=2), StashStore(stash))
    config: Any = {"configurable": {"thread_id": "short-lived"}}
    graph.invoke({"steps": ["start"]}, config)
    assert graph.get_state(config).values["steps"] == ["start", "plan 1"]
    deadline = time.monotonic() + 10
    while graph.get_state(config).values:  # wait for the expiry, not for a fixed time
        assert time.monotonic() < deadline, "the thread outlived its TTL"
        time.sleep(0.1)
    assert list(graph.get_state_history(config)) == []
    # Its keys share one expiry to the second (Stash counts whole seconds): the last of
    # them go within a second of the thread, and nothing of it is left behind.
    while list(stash.keys("*short-lived*")):
        assert time.monotonic() < deadline + 1.5, "keys of the thread outlived it"
        time.sleep(0.1)
