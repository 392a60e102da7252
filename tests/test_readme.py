"""Every README block is marked with how it runs; its Python blocks run and print what it shows.

A fence's info string says what it is. ``python`` runs embedded (``STASH_DB`` points
into a temporary directory, no ``STASH_URL``); ``python remote`` runs against a stashd
this module starts for that block (``STASH_URL`` points at it, the README's port 6380 is
replaced by its port); ``python no-run`` needs what a test cannot have, such as a host
named stash.internal. ``console`` is a terminal session, run by test_readme_shell.py.
``sh no-run``, ``text``, ``toml`` and ``json`` are commands for other machines, layouts
and configuration, not run (a ``json`` block must parse). Any other fence, an unmarked one included, fails here, so a new
example cannot go unrun by accident.

A Python block that prints is followed directly by a ```text output block with what it
prints; a block without one must print nothing. Each block runs in a process of its
own, in an empty working directory, and must exit 0; its stdout is matched by
tests/support/readme.py (ids, clocks and ticking TTLs may differ, nothing else).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.support.readme import Block, Matcher, blocks, output_after
from tests.support.servers import StashDaemon

RUN = ("python", "python remote")
NOT_RUN = ("python no-run", "console", "sh no-run", "text", "toml", "json")

ALL = blocks()
PYTHON = [
    (b, output_after(b, ALL[n + 1] if n + 1 < len(ALL) else None))
    for n, b in enumerate(ALL)
    if b.info in RUN
]


def test_every_block_is_marked_and_the_quick_starts_are_there() -> None:
    """Only known marks, output blocks right after a Python block; the quick starts exist."""
    outputs = {id(out) for _, out in PYTHON if out is not None}
    for n, block in enumerate(ALL):
        if block.info == "text output":
            assert n > 0, f"README.md:{block.line}: output of nothing"
            before = ALL[n - 1]
            assert before.info in RUN, f"README.md:{block.line}: output of a {before.info!r} block"
            assert output_after(before, block) is not None, f"README.md:{block.line}"
        else:
            assert block.info in RUN + NOT_RUN, f"README.md:{block.line}: fence {block.info!r}"
    assert len(outputs) == sum(b.info == "text output" for b in ALL)
    runnable = [(b.info, b.body) for b, _ in PYTHON]
    assert any(kind == "python" and "Stash()" in code for kind, code in runnable)
    assert any(kind == "python remote" and "api_key=" in code for kind, code in runnable)
    assert any("AsyncStash" in code and "await" in code for _, code in runnable)
    for block in ALL:
        if block.info == "json":
            json.loads(block.body)  # an agent's configuration, copied as it is


@pytest.mark.parametrize(
    ("block", "expected"), PYTHON, ids=[f"README.md:{b.line}" for b, _ in PYTHON]
)
def test_the_block_prints_what_the_readme_shows(
    block: Block, expected: str | None, tmp_path: Path
) -> None:
    """The block exits 0 in the environment its mark names, printing its output block."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STASH_")}
    env["STASH_DB"] = str(tmp_path / "readme.db")
    code = block.body
    with ExitStack() as stack:
        if block.info == "python remote":
            # A daemon of its own: a block prints what its namespace holds.
            daemon = stack.enter_context(StashDaemon("--no-http"))
            env["STASH_URL"] = f"redis://127.0.0.1:{daemon.port}"
            code = code.replace("6380", str(daemon.port))
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 0, f"README.md:{block.line}:\n{done.stderr}"
    matcher = Matcher()
    matcher.ran_for(time.monotonic() - started)
    problems = matcher.lines(expected or "", done.stdout)
    assert not problems, f"README.md:{block.line}\n" + "\n".join(problems)


def test_the_matcher_allows_ids_clocks_and_ticking_ttls_only() -> None:
    """Ids map consistently, TTLs may be 2 lower only where they are TTLs, other numbers exact."""
    m = Matcher()
    line = '{"memory_id":"xK9mP2nQ","ttl_remaining":900,"expires_at":"2026-11-25T14:10:00Z"}'
    assert m.line(line, line.replace("xK9mP2nQ", "ab3CDefg").replace("900", "898")) is None
    assert m.fill("RECALL xK9mP2nQ") == "RECALL ab3CDefg"
    assert m.line(line, line.replace("xK9mP2nQ", "zz3CDefg")) is not None  # another id
    assert m.line(line, line.replace("xK9mP2nQ", "ab3CDefg").replace("900", "897")) is not None
    assert m.line(line, line.replace("xK9mP2nQ", "ab3CDefg").replace("900", "901")) is not None
    assert m.line('{"size":35}', '{"size":34}') is not None
    assert m.line("4200", "4199") is not None
    assert m.lines("4200\n", "4199\n", "stash update x --extend 600") == []
    assert m.lines("OK\n", "OK\nmore\n") != []
    m.ran_for(2.5)  # an example that ran for 2.5 s: 3 more seconds may have ticked away
    assert m.lines("4200\n", "4195\n", "stash update x --extend 600") == []
    assert m.lines("4200\n", "4194\n", "stash update x --extend 600") != []
