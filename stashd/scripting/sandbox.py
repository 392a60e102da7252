"""One Lua 5.1 runtime (lupa) set up as Redis's script sandbox, and the conversions both ways.

A :class:`Sandbox` compiles scripts and runs one at a time under a memory cap and a time
limit. What a script's ``redis.call`` does is the caller's business: :meth:`Sandbox.run`
takes the function that runs one command and answers its reply (a value as the command
layer returns it, see :mod:`stashd.resp`, or a :class:`~stashd.errors.StashError`).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from importlib import resources
from typing import Any, Final

import lupa.lua51 as lua

from stashd import log
from stashd.errors import (
    CommandError,
    ScriptKilled,
    ScriptOutOfMemory,
    ScriptTimeLimit,
    StashError,
)
from stashd.ops.script import Stop
from stashd.resp import NULL_ARRAY, Score, Verbatim

logger = log.get("stashd.scripting")

#: What the version globals say: the Redis whose scripting this follows.
REDIS_VERSION: Final = "7.0.15"
REDIS_VERSION_NUM: Final = 0x07000F
#: Instructions between two looks at the clock: a Python call per 10,000 instructions
#: costs about a tenth of what those instructions cost, and notices a loop within 1 ms.
HOOK_EVERY: Final = 10_000
#: A script still running at this many times lua-time-limit is stopped: past the limit
#: itself other clients are answered BUSY and SCRIPT KILL stops it, as in Redis, and
#: this bound keeps one that nobody kills from holding the store for ever.
STOP_FACTOR: Final = 12
#: Nesting a reply may have, either way (a table that holds itself would never end).
MAX_DEPTH: Final = 100
#: Above this much Lua memory after a script, the runtime collects its garbage at once,
#: so what one script left behind does not count against the next one's cap.
COLLECT_ABOVE: Final = 8 * 1024 * 1024
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
#: Redis's redis.log levels, as stashd's log names them.
_LEVELS: Final = ("debug", "info", "info", "warning")

_SETUP: Final = (resources.files("stashd.scripting") / "sandbox.lua").read_text()

Call = Callable[[list[bytes]], Any]


class CallFailed(Exception):
    """redis.call's failure, raised into the script: its text is the error line."""


class ScriptError(StashError):
    """An error a script raised or returned, sent exactly as the script worded it.

    Redis sends a script's ``{err=...}`` verbatim, code and all (``-x`` has no message),
    so the text is kept whole rather than rendered from a template.
    """

    def __init__(self, text: str) -> None:
        code, _, message = text.partition(" ")
        self.code = code
        self._fill(message=message)
        self.text = text

    @property
    def wire(self) -> str:
        """The error line exactly as the script gave it."""
        return self.text


def sha1hex(text: bytes) -> str:
    """The SHA1 of a script, lower-case hex, as EVALSHA names it."""
    return hashlib.sha1(text).hexdigest()  # noqa: S324 - Redis names scripts by SHA1


def _forbid_attributes(obj: object, name: object, setting: bool) -> object:  # noqa: ARG001
    """No Python attribute is reachable from Lua: a function's attributes lead everywhere."""
    raise AttributeError(name)


#: A script's map with a table as a key, or set whose members are tables or mix strings
#: and numbers: Stash sends a set's members in order and a map's keys as keys, which
#: such values cannot be.
_ODD_KEYS: Final = CommandError(
    "a map returned by a script cannot have tables as keys, nor a set tables or both "
    "strings and numbers as members"
)


def _plain(keys: list[Any], *, one_kind: bool) -> bool:
    """Whether reply keys can key a map (no tables), or be ordered as a set's members."""
    if any(isinstance(k, list | dict | set) for k in keys):
        return False
    return not one_kind or len({type(k) for k in keys}) <= 1


class Sandbox:
    """A Lua runtime for one namespace's scripts, with compiled scripts kept by SHA1."""

    def __init__(self, max_memory: int, time_limit_ms: int) -> None:
        self.max_memory = max_memory
        self.time_limit_ms = time_limit_ms
        self.stop_after_ms = time_limit_ms * STOP_FACTOR
        self._lua = lua.LuaRuntime(
            encoding=None,
            register_eval=False,
            register_builtins=False,
            unpack_returned_tuples=True,
            attribute_filter=_forbid_attributes,
            max_memory=max_memory,
        )
        self._functions: dict[str, Any] = {}
        # The running script's state; one at a time (the runtime is locked while it runs).
        self._call: Call | None = None
        self._deadline = 0.0
        self._killed = False
        self._fault: BaseException | None = None
        self._proto = 2
        # Set from another thread by SCRIPT KILL; the hook stops the script at its next look.
        self.kill_requested = False
        self.running = False
        # The setup chunk keeps the callbacks as upvalues no script can reach.
        self._compile, self._run, self._stop, self._is_stop, self._collect = self._lua.compile(
            _SETUP
        )(
            self._py_call,
            self._py_pcall,
            self._py_log,
            self._py_sha1,
            self._py_check,
            self._py_setresp,
            REDIS_VERSION.encode(),
            REDIS_VERSION_NUM,
        )

    # -- compiling ----------------------------------------------------------------------
    def load(self, sha: str, source: bytes) -> Any:  # noqa: ANN401 - a Lua function
        """The compiled script, compiling it on first use; raises CommandError if it cannot."""
        fn = self._functions.get(sha)
        if fn is not None:
            return fn
        try:
            fn, err = self._compile(source)
        except lua.LuaMemoryError:
            raise ScriptOutOfMemory(self.max_memory) from None
        if fn is None:
            text = err.decode("utf-8", "replace") if isinstance(err, bytes) else str(err)
            raise CommandError(f"Error compiling script (new function): {text}")
        self._functions[sha] = fn
        return fn

    def forget(self) -> None:
        """Drop every compiled script (SCRIPT FLUSH)."""
        self._functions.clear()
        self._collect()

    # -- running ------------------------------------------------------------------------
    def run(self, sha: str, source: bytes, keys: list[bytes], argv: list[bytes], call: Call) -> Any:  # noqa: ANN401 - any reply
        """The reply of the script with these KEYS and ARGV, ``call`` running its commands.

        A script's error is its reply (as a :class:`ScriptError`); raises
        :class:`~stashd.ops.script.Stop` when the time limit, SCRIPT KILL or the memory
        cap stopped it, and passes on whatever ``call`` raised that was not a
        :class:`StashError` (a store's fault).
        """
        fn = self.load(sha, source)
        self._call = call
        self._killed = False
        self.kill_requested = False
        self._fault = None
        self._proto = 2
        # Past lua-time-limit other clients are answered BUSY (stashd.batch) and SCRIPT
        # KILL stops it; past STOP_FACTOR times that it is stopped, so none runs forever.
        self._deadline = time.monotonic() + self.stop_after_ms / 1000
        lua_rt = self._lua
        self.running = True
        try:
            try:
                ok, result = self._run(
                    fn, lua_rt.table_from(keys), lua_rt.table_from(argv), HOOK_EVERY
                )
                reply = self._reply(ok, result, sha)
            finally:
                self._stop()
                self._call = None
                self.running = False
                if lua_rt.get_memory_used() > COLLECT_ABOVE:
                    self._collect()
        except lua.LuaMemoryError:
            reply = Stop(ScriptOutOfMemory(self.max_memory))
        except lua.LuaError as exc:
            # Raised while reading the result (a metamethod failing); the script's error.
            reply = ScriptError(f"ERR {exc} script: {sha}")
        if self._fault is not None:
            raise self._fault
        if self._killed:
            raise Stop(
                ScriptKilled() if self.kill_requested else ScriptTimeLimit(self.stop_after_ms)
            )
        if type(reply) is Stop:
            raise reply
        return reply

    def _reply(self, ok: bool, result: Any, sha: str) -> Any:  # noqa: ANN401 - any reply
        if ok:
            return self.to_reply(result, 0)
        if self._is_stop(result):
            return None  # run() answers from the flags that stopped it
        if type(result) is bytes:  # a memory error: Lua calls no handler for it
            result = self._lua.table_from({b"err": result})
        text = result[b"err"]
        message = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
        if message == "not enough memory":
            return Stop(ScriptOutOfMemory(self.max_memory))
        line = result[b"line"]
        where = f", on @user_script:{int(line)}." if line is not None and line >= 0 else "."
        return ScriptError(f"{message} script: {sha}{where}")

    # -- callbacks from Lua -------------------------------------------------------------
    def _py_call(self, *args: Any) -> Any:  # noqa: ANN401 - Lua values
        """redis.call: the command's reply, or its error raised in the script."""
        ok, reply = self._dispatch(args)
        if not ok:
            raise CallFailed(reply)
        return reply

    def _py_pcall(self, *args: Any) -> Any:  # noqa: ANN401 - Lua values
        """redis.pcall: the command's reply, or its error as a table {err=...}."""
        ok, reply = self._dispatch(args)
        if not ok:
            if self._fault is not None or self._killed:
                raise CallFailed(reply)  # stopped: the script may not go on
            return self._lua.table_from({b"err": reply.encode()})
        return reply

    def _dispatch(self, args: tuple[Any, ...]) -> tuple[bool, Any]:
        """(True, the reply as a Lua value) or (False, the error line)."""
        if self._fault is not None or self._killed:
            return False, "ERR script stopped"
        call = self._call
        assert call is not None
        if not args:
            return False, "ERR Please specify at least one argument for this redis lib call"
        words: list[bytes] = []
        for arg in args:
            t = type(arg)
            if t is bytes:
                words.append(arg)
            elif t is int or t is float:
                words.append(b"%.17g" % arg)
            else:
                return False, "ERR Lua redis lib command arguments must be strings or integers"
        try:
            reply = call(words)
        except StashError as exc:
            reply = exc
        except Exception as exc:  # noqa: BLE001 - a store's fault: the op runs again or fails
            self._fault = exc
            return False, "ERR script stopped"
        if isinstance(reply, StashError):
            return False, reply.wire
        try:
            return True, self.to_lua(reply, 0)
        except StashError as exc:
            return False, exc.wire

    def _py_log(self, level: float, message: bytes) -> None:
        getattr(logger, _LEVELS[int(level)])(
            "script_log", message=message.decode("utf-8", "replace")
        )

    @staticmethod
    def _py_sha1(text: bytes) -> bytes:
        return sha1hex(text).encode()

    def _py_check(self) -> bool:
        if time.monotonic() >= self._deadline or self.kill_requested:
            self._killed = True
        return self._killed or self._fault is not None

    @property
    def proto(self) -> int:
        """The protocol the running script reads replies in: 2, or 3 after redis.setresp(3)."""
        return self._proto

    def _py_setresp(self, proto: float) -> None:
        self._proto = int(proto)

    # -- conversions --------------------------------------------------------------------
    def to_lua(self, value: Any, depth: int) -> Any:  # noqa: ANN401 - reply -> Lua value
        """A command's reply as Redis hands it to a script (RESP2 or RESP3 rules)."""
        t = type(value)
        if t is bytes or t is int:
            return value
        if value is None or value is NULL_ARRAY:
            return None if self._proto == 3 else False
        if t is str:
            return self._lua.table_from({b"ok": value.encode()})
        if t is Verbatim:
            return value.encode()
        if t is bool:
            return value if self._proto == 3 else int(value)
        if t is float:
            if self._proto == 3:
                return self._lua.table_from({b"double": value})
            return repr(value).encode()
        if t is Score:  # as Redis hands a script a sorted-set score
            if self._proto == 3:
                return self._lua.table_from({b"double": float(value)})
            return value.text()
        if depth >= MAX_DEPTH:
            raise CommandError("reached lua stack limit")
        if t is list or t is tuple:
            return self._lua.table_from([self.to_lua(v, depth + 1) for v in value])
        if t is set or t is frozenset:
            items = sorted(value)
            if self._proto == 3:
                inner = self._lua.table_from({self.to_lua(v, depth + 1): True for v in items})
                return self._lua.table_from({b"set": inner})
            return self._lua.table_from([self.to_lua(v, depth + 1) for v in items])
        if t is dict:
            if self._proto == 3:
                inner = self._lua.table_from(
                    {self.to_lua(k, depth + 1): self.to_lua(v, depth + 1) for k, v in value.items()}
                )
                return self._lua.table_from({b"map": inner})
            flat: list[Any] = []
            for k, v in value.items():
                flat += (self.to_lua(k, depth + 1), self.to_lua(v, depth + 1))
            return self._lua.table_from(flat)
        if isinstance(value, StashError):
            return self._lua.table_from({b"err": value.wire.encode()})
        msg = f"cannot hand a reply of type {t.__name__} to a script"
        raise TypeError(msg)

    def to_reply(self, value: Any, depth: int) -> Any:  # noqa: ANN401 - Lua value -> reply
        """A script's result as Redis replies it: numbers truncated, tables as arrays."""
        t = type(value)
        if t is bytes:
            return value
        if value is None:
            return None
        if value is True or value is False:
            # After redis.setresp(3) a boolean is RESP3's (:1 or :0 to a RESP2 client);
            # before it, Redis's old conversion: true is 1, false is nil.
            if self._proto == 3:
                return value
            return 1 if value else None
        if t is int:
            return value if INT64_MIN <= value <= INT64_MAX else INT64_MIN
        if t is float:
            # C's (long long) cast, as Redis converts: toward zero; out of range, INT64_MIN.
            if math.isnan(value) or not INT64_MIN <= value < 2.0**63:
                return INT64_MIN
            return int(value)
        if lua.lua_type(value) != "table":
            return None  # functions, coroutines: Redis replies nil
        if depth >= MAX_DEPTH:
            return CommandError("reached lua stack limit")
        err = value[b"err"]
        if type(err) is bytes:
            return ScriptError(err.decode("utf-8", "replace"))
        ok = value[b"ok"]
        if type(ok) is bytes:
            return ok.decode("utf-8", "replace")
        # The RESP3 forms a script may return, as Redis reads them; a RESP2 client gets
        # each in its RESP2 shape (the encoder flattens a map, lists a set, and writes a
        # double as bulk text).
        double = value[b"double"]
        if type(double) in (int, float):
            return Score(double)
        mapped = value[b"map"]
        if lua.lua_type(mapped) == "table":
            pairs = [
                (self.to_reply(k, depth + 1), self.to_reply(v, depth + 1))
                for k, v in mapped.items()
            ]
            return dict(pairs) if _plain([k for k, _ in pairs], one_kind=False) else _ODD_KEYS
        members = value[b"set"]
        if lua.lua_type(members) == "table":
            keys = [self.to_reply(k, depth + 1) for k in members]
            return set(keys) if _plain(keys, one_kind=True) else _ODD_KEYS
        out: list[Any] = []
        i = 1
        while True:
            item = value[i]
            if item is None:
                return out
            out.append(self.to_reply(item, depth + 1))
            i += 1
