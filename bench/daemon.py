"""The daemon as every benchmark runs it: at its default log level, its log in a file.

At the default level (``info``) every write is logged (stashd.events), so the figures
include what those events cost; the log goes to a file, as a deployed daemon's goes to
a file or the journal, rather than to a pipe nobody reads.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from pathlib import Path

from stashd.config import Config
from tests.support.servers import StashDaemon

#: The level a daemon starts with when none is given; ``STASH_BENCH_LOG_LEVEL`` sets
#: another, only to measure what the write events cost (the figures reported are at
#: the default).
LOG_LEVEL = os.environ.get("STASH_BENCH_LOG_LEVEL", Config().log_level)
_LOGS = Path(tempfile.mkdtemp(prefix="stash-bench-logs-"))
_NUMBERS = itertools.count()


def daemon(*args: str, env: dict[str, str] | None = None) -> StashDaemon:
    """A daemon with these flags, at the default log level, logging to its own file."""
    # Numbered when made, not by the files so far: a daemon made but not yet started
    # has no file, and the next one would take its name.
    log_file = _LOGS / f"stashd-{next(_NUMBERS)}.log"
    return StashDaemon(*args, env=env, log_level=LOG_LEVEL, log_file=log_file)
