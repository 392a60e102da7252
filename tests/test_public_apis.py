"""The package uses its dependencies through their public APIs only, and pins no upper bound.

A private attribute or an undocumented module of aiohttp, redis-py, hiredis or uvloop can
change in any release; a use of one forces an upper pin, and the pin blocks every security
release after it. These tests read the package's source, so a new use fails here first.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "stashd"
SOURCES = sorted(PACKAGE.rglob("*.py"))

#: Underscored names that are public API all the same: namedtuple's methods, which carry
#: an underscore only so they cannot clash with field names.
PUBLIC_UNDERSCORED = frozenset({"_replace", "_asdict", "_make", "_fields", "_field_defaults"})
#: The third-party modules the package may import, each a documented entry point.
PUBLIC_MODULES = frozenset(
    {
        "aiohttp",
        "aiohttp.web",
        "click",
        "dotenv",
        "hiredis",
        # LangGraph's documented checkpointer interface: BaseCheckpointSaver and its types,
        # the serializer protocol, and langchain-core's RunnableConfig that it takes.
        "langchain_core.runnables",
        "langgraph.checkpoint.base",
        "langgraph.checkpoint.serde.base",
        "langgraph.store.base",  # LangGraph's documented BaseStore, its ops and TTLConfig
        "lupa",
        "lupa.lua51",  # lupa's documented way to pick Lua 5.1, the version Redis runs
        # The MCP SDK's documented entry points: the package, its server (low-level Server,
        # the streamable HTTP session manager, the transport security settings) and types.
        "mcp",
        "mcp.server",
        "mcp.server.streamable_http_manager",
        "mcp.server.transport_security",
        "mcp.types",
        "pydantic",  # the SDK's models and schemas; tool arguments are validated with it
        "multidict",
        "orjson",
        "platformdirs",
        "redis",
        "redis.asyncio",
        "redis.asyncio.cluster",
        "redis.asyncio.retry",
        "redis.backoff",
        "redis.exceptions",
        "redis.retry",
        "structlog",
        "uvloop",
    }
)


def _first_party(module: str) -> bool:
    top = module.partition(".")[0]
    return top == "stashd" or top in sys.stdlib_module_names


def _trees() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text(), str(path))) for path in SOURCES]


def test_no_private_attribute_of_another_object_is_used() -> None:
    """``x._name`` only on ``self``/``cls`` (our own state), never on a library's object."""
    found = []
    for path, tree in _trees():
        for node in ast.walk(tree):
            name = None
            if isinstance(node, ast.Attribute):
                owner = node.value
                if isinstance(owner, ast.Name) and owner.id in {"self", "cls"}:
                    continue
                name = node.attr
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in {"getattr", "setattr", "hasattr"}
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
            ):
                name = node.args[1].value
            if (
                name is not None
                and name.startswith("_")
                and not name.startswith("__")
                and name not in PUBLIC_UNDERSCORED
            ):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert not found, "private attributes used:\n" + "\n".join(found)


def test_third_party_modules_are_public_entry_points() -> None:
    """Every import of a dependency names one of its documented modules, none underscored."""
    found = []
    for path, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                if _first_party(module):
                    continue
                if module not in PUBLIC_MODULES or any(
                    p.startswith("_") for p in module.split(".")
                ):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {module}")
    assert not found, "undocumented modules imported:\n" + "\n".join(found)


def test_no_dependency_has_an_upper_bound() -> None:
    """pyproject pins no dependency below a future release (aiohttp's security fixes)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    bounded = [d for d in project["dependencies"] if re.search(r"<|~=|==", d.partition(";")[0])]
    assert not bounded, bounded
    assert any(d.startswith("aiohttp>=") for d in project["dependencies"])


@pytest.mark.parametrize(
    ("source", "check"),
    [
        ("transport._sock.close()", test_no_private_attribute_of_another_object_is_used),
        ("getattr(parser, '_messages')", test_no_private_attribute_of_another_object_is_used),
        (
            "from aiohttp.web_protocol import RequestHandler",
            test_third_party_modules_are_public_entry_points,
        ),
    ],
)
def test_the_checks_catch_what_they_are_for(
    source: str, check: Callable[[], None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each check fails on a sample of what it forbids, so a green run means something."""
    sample = tmp_path / "sample.py"
    sample.write_text(source + "\n")
    monkeypatch.setattr(sys.modules[__name__], "SOURCES", [sample])
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    with pytest.raises(AssertionError, match=r"used:|imported:"):
        check()
