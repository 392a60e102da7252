"""Each namespace's scripts, by SHA1, and the Lua sandbox they run in: bounded, kept apart.

A namespace sees only its own scripts (SCRIPT EXISTS in one tenant says nothing of
another's) and runs them in a Lua runtime of its own, so nothing one tenant's script
leaves in Lua can reach another's. Both are bounded: at most :data:`MAX_SCRIPTS` scripts
and :data:`MAX_SCRIPT_BYTES` of their text per namespace (the oldest loaded go first; a
client whose EVALSHA then answers NOSCRIPT loads it again, as redis-py and coredis do),
and at most :data:`MAX_SANDBOXES` runtimes alive (the least recently used is closed, its
scripts compiled again from their text when next run).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Final

from stashd.scripting.sandbox import Sandbox, sha1hex

if TYPE_CHECKING:
    from collections.abc import Mapping

#: Scripts one namespace may hold: Redis holds any number until SCRIPT FLUSH, but a
#: client that EVALs a new text every time would then grow the server without end.
MAX_SCRIPTS: Final = 1000
#: The text those scripts may take, per namespace.
MAX_SCRIPT_BYTES: Final = 16 * 1024 * 1024
#: Lua runtimes alive at once, one per namespace that ran a script lately.
MAX_SANDBOXES: Final = 16
#: The memory cap of each Lua runtime: a script that allocates past it gets an error.
LUA_MAX_MEMORY: Final = 64 * 1024 * 1024
#: Redis's lua-time-limit: how long a script may run before it is stopped.
DEFAULT_TIME_LIMIT_MS: Final = 5000


class Scripts:
    """The script caches and sandboxes of every namespace of one daemon."""

    def __init__(
        self, time_limit_ms: int = DEFAULT_TIME_LIMIT_MS, max_memory: int = LUA_MAX_MEMORY
    ) -> None:
        self.time_limit_ms = time_limit_ms
        self.max_memory = max_memory
        self._texts: dict[str, OrderedDict[str, bytes]] = {}
        self._bytes: dict[str, int] = {}
        self._sandboxes: OrderedDict[str, Sandbox] = OrderedDict()
        # Scripts run on the store's thread (SQLite's) while commands parse on the loop.
        self._lock = threading.Lock()

    def sandbox(self, ns: str) -> Sandbox:
        """The namespace's Lua runtime, made on first use."""
        with self._lock:
            box = self._sandboxes.get(ns)
            if box is not None:
                self._sandboxes.move_to_end(ns)
                return box
            box = self._sandboxes[ns] = Sandbox(self.max_memory, self.time_limit_ms)
            if len(self._sandboxes) > MAX_SANDBOXES:
                for old, running in list(self._sandboxes.items()):
                    if not running.running:
                        del self._sandboxes[old]
                        break
            return box

    def load(self, ns: str, source: bytes) -> str:
        """Compile ``source`` and keep it (SCRIPT LOAD, EVAL); its SHA1.

        Raises :class:`~stashd.errors.CommandError` when it does not compile.
        """
        sha = sha1hex(source)
        self.sandbox(ns).load(sha, source)
        with self._lock:
            texts = self._texts.setdefault(ns, OrderedDict())
            if sha in texts:
                return sha
            texts[sha] = source
            held = self._bytes.get(ns, 0) + len(source)
            while len(texts) > MAX_SCRIPTS or (held > MAX_SCRIPT_BYTES and len(texts) > 1):
                _, dropped = texts.popitem(last=False)
                held -= len(dropped)
            self._bytes[ns] = held
        return sha

    def text(self, ns: str, sha: str) -> bytes | None:
        """The script of this SHA1 (any case) in the namespace, or None."""
        texts = self._texts.get(ns)
        return None if texts is None else texts.get(sha.lower())

    def exists(self, ns: str, shas: list[bytes]) -> list[int]:
        """1 or 0 for each SHA1, as SCRIPT EXISTS answers."""
        texts: Mapping[str, bytes] = self._texts.get(ns) or {}
        return [int(sha.decode("latin-1").lower() in texts) for sha in shas]

    def flush(self, ns: str) -> None:
        """Forget the namespace's scripts (SCRIPT FLUSH)."""
        with self._lock:
            self._texts.pop(ns, None)
            self._bytes.pop(ns, None)
            box = self._sandboxes.get(ns)
            if box is not None and not box.running:
                del self._sandboxes[ns]

    def kill(self, ns: str) -> bool:
        """Ask the namespace's running script to stop (SCRIPT KILL); False if none runs."""
        box = self._sandboxes.get(ns)
        if box is None or not box.running:
            return False
        box.kill_requested = True
        return True
