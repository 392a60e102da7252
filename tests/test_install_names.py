"""The names a user imports: ``stashd``, and ``stash_memory`` as an earlier README wrote it."""

from __future__ import annotations

import subprocess
import sys


def test_stash_memory_is_the_same_api_as_stashd() -> None:
    """``from stash_memory import Stash`` works, in a fresh interpreter, and is stashd's own."""
    code = (
        "import stash_memory, stashd; "
        "assert stash_memory.Stash is stashd.Stash; "
        "assert stash_memory.AsyncStash is stashd.AsyncStash; "
        "assert stash_memory.StashError is stashd.StashError; "
        "print(stash_memory.Stash.__module__)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "stashd.client"
