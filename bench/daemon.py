"""The daemon as every benchmark runs it: at its default log level, its log in a file.

At the default level (``info``) every write is logged (stashd.events), so the figures
include what those events cost; the log goes to a file, as a deployed daemon's goes to
a file or the journal, rather than to a pipe nobody reads.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from stashd.config import Config
from tests.support.servers import StashDaemon

#: The level a daemon starts with when none is given.
DEFAULT_LOG_LEVEL = Config().log_level
_LOGS = Path(tempfile.mkdtemp(prefix="stash-bench-logs-"))


def daemon(*args: str, env: dict[str, str] | None = None) -> StashDaemon:
    """A daemon with these flags, at the default log level, logging to its own file."""
    log_file = _LOGS / f"stashd-{len(list(_LOGS.iterdir()))}.log"
    return StashDaemon(*args, env=env, log_level=DEFAULT_LOG_LEVEL, log_file=log_file)
