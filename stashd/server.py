"""The RESP server: one asyncio Protocol per connection, dispatching pipelined requests.

Everything a read completes is dispatched in order and answered with one write. On a
store that needs no I/O (memory) operations run inline, and so do operations that only
read on a store that offers it (SQLite); otherwise the operations of a read go to the
:class:`Batcher`, which gathers what every connection asked for in one
turn of the loop and runs it as one batch (one SQLite transaction), and the replies are
written only after that batch has returned, so an acknowledged write is durable.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, cast

from stashd import log
from stashd.batch import Batcher
from stashd.commands import TABLE
from stashd.commands.base import NOAUTH, WRITE, Deferred, Session
from stashd.commands.transactions import CONTROL as TXN_CONTROL
from stashd.errors import NoAuth, ProtocolError, StashError, UnknownCommand, WrongArity
from stashd.resp import (
    MAX_ARGS,
    MAX_BULK,
    PREAUTH_MAX_ARGS,
    PREAUTH_MAX_BULK,
    RequestReader,
    encode,
)

if TYPE_CHECKING:
    from stashd.ops import Op
    from stashd.service import MemoryService
    from stashd.store.base import Store
    from stashd.tenancy import Keyring

logger = log.get("stashd.server")

QUEUED: Final = "QUEUED"

# Names that only arrive when a browser or HTTP client is tricked into talking to us;
# Redis closes the connection on them, and so do we.
_HTTP_LINES: Final = frozenset({b"post", b"host:"})

# Write events, named for what happened to the data.
_WRITE_EVENTS: Final = {
    "stash": "stash_created",
    "update": "stash_updated",
    "forget": "stash_forgotten",
    "set": "key_set",
    "setnx": "key_set",
    "setex": "key_set",
    "psetex": "key_set",
    "mset": "key_set",
    "getex": "key_expiry_set",
    "del": "key_deleted",
    "unlink": "key_deleted",
    "getdel": "key_deleted",
    "expire": "key_expiry_set",
    "pexpire": "key_expiry_set",
    "expireat": "key_expiry_set",
    "pexpireat": "key_expiry_set",
    "incr": "key_incremented",
    "decr": "key_incremented",
    "incrby": "key_incremented",
    "decrby": "key_incremented",
    "append": "key_appended",
    "rename": "key_renamed",
    "flushdb": "namespace_flushed",
    "flushall": "namespace_flushed",
}


@dataclass(eq=False)
class ServerContext:
    """What every connection of one server shares."""

    service: MemoryService
    keyring: Keyring
    store: Store
    log_writes: bool = True
    connections: set[Connection] = field(default_factory=set)
    batcher: Batcher | None = None

    def __post_init__(self) -> None:
        """Every door shares one batcher per store, so their work is grouped together."""
        if self.batcher is None:
            self.batcher = Batcher(self.store)


class Connection(asyncio.Protocol):
    """One client connection: framing, authentication state, dispatch, replies."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.transport: asyncio.Transport | None = None
        self.session: Session | None = None
        self.reader = RequestReader()
        self._waiting = False  # a batch of this connection's operations is in flight
        self._paused_for_writes = False
        self._closing = False

    # -- asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start anonymous: open mode gives the default namespace, strict mode nothing."""
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast("asyncio.Transport", transport)
        ctx = self.ctx
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        self.session = Session(
            ctx.service,
            ctx.keyring,
            ctx.keyring.anonymous(),
            peer=_addr(peer),
            local=_addr(local),
        )
        self._apply_limits()
        ctx.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002 - asyncio API
        """Forget the connection; a batch still in flight finishes without it."""
        self.ctx.connections.discard(self)
        self.transport = None

    def pause_writing(self) -> None:
        """The client is not reading its replies: stop reading its requests too."""
        self._paused_for_writes = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        """Replies drained: read again, unless a batch is still in flight."""
        self._paused_for_writes = False
        if self.transport is not None and not self._waiting:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        """Parse what the read completed and answer it with one write."""
        items = self.reader.feed(data)
        if items:
            self._dispatch(items)

    # -- dispatch ---------------------------------------------------------------------
    def _apply_limits(self) -> None:
        session = self.session
        assert session is not None
        principal = session.principal
        if principal is None:
            self.reader.set_limits(
                max_args=PREAUTH_MAX_ARGS, max_bulk=PREAUTH_MAX_BULK, max_payload=PREAUTH_MAX_BULK
            )
        else:
            self.reader.set_limits(
                max_args=MAX_ARGS, max_bulk=MAX_BULK, max_payload=principal.limits.max_payload
            )

    def _dispatch(self, items: list[Any]) -> None:
        session = self.session
        transport = self.transport
        if session is None or transport is None:
            return
        store = self.ctx.store
        inline = store.inline
        # A store that can answer reads at once (SQLite in WAL mode) does, as long as no
        # earlier request of this read is still waiting for its batch.
        inline_reads = store.inline_reads
        run_now = store.run if inline else store.read_now
        replies: list[Any] = []
        pending: list[tuple[int, Deferred, Any]] = []  # (reply slot, deferred, command)
        close = False
        for args in items:
            if type(args) is not list:
                # A per-request refusal from the framing guard, or a protocol error.
                replies.append(args)
                if isinstance(args, ProtocolError):
                    close = True
                    break
                continue
            name = args[0].lower()
            cmd = TABLE.get(name)
            if cmd is None:
                if name in _HTTP_LINES:
                    logger.warning("http_request_on_resp_port", peer=session.peer)
                    close = True
                    replies.clear()
                    pending.clear()
                    break
                replies.append(UnknownCommand(_text(args[0]), [_text(a) for a in args[1:]]))
                if session.multi is not None:
                    session.multi_dirty = True
                continue
            arity = cmd.arity
            n = len(args)
            if (arity > 0 and n != arity) or n < -arity:
                replies.append(WrongArity(cmd.name))
                if session.multi is not None:
                    session.multi_dirty = True
                continue
            if session.principal is None and NOAUTH not in cmd.flags:
                replies.append(NoAuth())
                if session.multi is not None:
                    session.multi_dirty = True
                continue
            if session.multi is not None and name not in TXN_CONTROL:
                # Inside MULTI: checked now, run at EXEC.
                session.multi.append(args)
                replies.append(QUEUED)
                continue
            session.last_command = cmd.name
            before = session.principal
            try:
                reply = cmd.handler(session, args)
            except StashError as exc:
                reply = exc
            if session.principal is not before:
                self._apply_limits()
            if type(reply) is Deferred:
                if inline or (inline_reads and not pending and not reply.op.writes):
                    try:
                        result = run_now(reply.op)
                    except StashError as exc:
                        replies.append(exc)
                        continue
                    if self.ctx.log_writes and WRITE in cmd.flags:
                        _log_write(cmd.name, reply.op, args, result)
                    finish = reply.finish
                    replies.append(result if finish is None else finish(result))
                else:
                    pending.append((len(replies), reply, cmd))
                    replies.append(None)
            else:
                replies.append(reply)
            if session.close_after_reply:
                close = True
                break
        if pending:
            self._wait_for(pending, replies, close)
            return
        self._send(replies, close)

    def _wait_for(
        self, pending: list[tuple[int, Deferred, Any]], replies: list[Any], close: bool
    ) -> None:
        """Hand the operations to the batcher; reply once they have committed."""
        batcher = self.ctx.batcher
        assert batcher is not None
        transport = self.transport
        assert transport is not None
        self._waiting = True
        transport.pause_reading()
        log_writes = self.ctx.log_writes

        def done(results: list[Any]) -> None:
            self._waiting = False
            for (slot, deferred, cmd), result in zip(pending, results, strict=True):
                if isinstance(result, StashError) or deferred.finish is None:
                    replies[slot] = result
                else:
                    replies[slot] = deferred.finish(result)
                if log_writes and WRITE in cmd.flags and not isinstance(result, StashError):
                    _log_write(cmd.name, deferred.op, [], result)
            self._send(replies, close)
            if self.transport is not None and not close and not self._paused_for_writes:
                self.transport.resume_reading()

        batcher.submit([d.op for _, d, _ in pending], done)

    def _send(self, replies: list[Any], close: bool) -> None:
        transport = self.transport
        session = self.session
        if transport is None or session is None:
            return
        out = bytearray()
        proto = session.proto
        for reply in replies:
            encode(reply, proto, out)
        if out:
            transport.write(out)
        if close:
            self._closing = True
            transport.close()

    def close_when_idle(self) -> None:
        """Shutdown: close now if no batch is in flight, else right after it replies."""
        if self.transport is not None and not self._waiting:
            self.transport.close()


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _addr(addr: Any) -> str:  # noqa: ANN401 - whatever the transport reports
    if isinstance(addr, tuple) and len(addr) >= 2:
        host = addr[0]
        return f"[{host}]:{addr[1]}" if ":" in str(host) else f"{host}:{addr[1]}"
    return str(addr or "")


def _log_write(name: str, op: Op, args: list[bytes], result: Any) -> None:  # noqa: ANN401
    """One event per write: namespace, key or id, TTL and size; never the value itself."""
    event = _WRITE_EVENTS.get(name, "key_written")
    fields: dict[str, Any] = {"namespace": op.ns}
    key = result if name == "stash" and isinstance(result, bytes) else op.key
    if key:
        fields["id" if name in ("stash", "update", "forget") else "key"] = _text(key)
    elif args[1:] and name in ("forget", "del", "unlink"):
        fields["keys"] = len(args) - 1
    expires_at = getattr(op, "expires_at", None)
    if isinstance(expires_at, int):
        fields["ttl_seconds"] = max(0, (expires_at - _now_ms()) // 1000)
    value = getattr(op, "value", None)
    if isinstance(value, bytes):
        fields["payload_bytes"] = len(value)
    data = getattr(op, "data", None)
    if isinstance(data, bytes):
        fields["payload_bytes"] = len(data)
    if (
        isinstance(result, int)
        and not isinstance(result, bool)
        and name in ("forget", "del", "unlink")
    ):
        fields["removed"] = result
    logger.info(event, **fields)


def _now_ms() -> int:
    import time  # noqa: PLC0415 - only on the logging path

    return time.time_ns() // 1_000_000
