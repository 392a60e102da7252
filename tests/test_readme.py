"""The README's Python blocks run as written: embedded ones on a fresh file, remote ones on a daemon.

A block is a fence whose info string starts with ``python``; the words after it say
how it runs: none (embedded: ``STASH_DB`` points into a temporary directory and no
``STASH_URL`` is set), ``remote`` (a stashd this module starts; ``STASH_URL`` points at
it, and the README's port 6380 is replaced by its port), or ``no-run`` (an example
that needs what a test cannot have, such as a host named stash.internal). Each block
runs in a process of its own, in an empty working directory.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import StashDaemon

README = Path(__file__).resolve().parent.parent / "README.md"
FENCE = re.compile(r"^```python(?P<tags>[^\n]*)\n(?P<code>.*?)^```$", re.MULTILINE | re.DOTALL)
KINDS = ("", "remote", "no-run")


def blocks() -> list[tuple[int, str, str]]:
    """(line, kind, code) of every Python block in the README."""
    text = README.read_text()
    found = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        found.append((line, match["tags"].strip(), match["code"]))
    return found


@pytest.fixture(scope="module")
def daemon() -> Iterator[StashDaemon]:
    """The stashd remote blocks talk to."""
    with StashDaemon("--no-http") as d:
        yield d


def test_every_block_is_marked_and_the_quick_starts_are_there() -> None:
    """Only known marks; embedded, remote and async examples all exist to be run."""
    found = blocks()
    assert {kind for _, kind, _ in found} <= set(KINDS), found
    runnable = [(kind, code) for _, kind, code in found if kind != "no-run"]
    assert any(kind == "" and "Stash()" in code for kind, code in runnable)
    assert any(kind == "remote" and "api_key=" in code for kind, code in runnable)
    assert any("AsyncStash" in code and "await" in code for _, code in runnable)


@pytest.mark.parametrize(
    ("line", "kind", "code"),
    [b for b in blocks() if b[1] != "no-run"],
    ids=[f"README.md:{b[0]}" for b in blocks() if b[1] != "no-run"],
)
def test_the_block_runs(
    line: int, kind: str, code: str, daemon: StashDaemon, tmp_path: Path
) -> None:
    """The block exits 0 in the environment its mark names."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STASH_")}
    env["STASH_DB"] = str(tmp_path / "readme.db")
    if kind == "remote":
        env["STASH_URL"] = f"redis://127.0.0.1:{daemon.port}"
        code = code.replace("6380", str(daemon.port))
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"README.md line {line}:\n{done.stderr}"
