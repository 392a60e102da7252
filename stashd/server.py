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
from stashd.commands import DIRECT, TABLE
from stashd.commands.base import NOAUTH, WRITE, Awaiting, Deferred, Session
from stashd.commands.transactions import CONTROL as TXN_CONTROL
from stashd.errors import (
    MaxClients,
    NoAuth,
    ProtocolError,
    RateLimited,
    StashError,
    StoreUnavailable,
    UnknownCommand,
    WrongArity,
)
from stashd.ratelimit import LocalLimiter, RateLimiter
from stashd.resp import (
    MAX_ARGS,
    MAX_BULK,
    MAX_REQUEST_BYTES,
    PREAUTH_MAX_ARGS,
    PREAUTH_MAX_BULK,
    RequestReader,
    encode,
)
from stashd.service import seconds_left
from stashd.store.base import Entry, wall_clock_ms
from stashd.tenancy import AuthThrottle

try:
    from stashd import _fastpath
except ImportError:  # pragma: no cover - installed with STASH_PURE_PYTHON=1
    _fastpath = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from collections.abc import Collection

    from stashd.ops import Op
    from stashd.ratelimit import Grant, Rate, SharedLimiter
    from stashd.service import MemoryService
    from stashd.store.base import Store
    from stashd.tenancy import Keyring, Principal

logger = log.get("stashd.server")

QUEUED: Final = "QUEUED"

# What the C hot path reports as the last command it ran, as CLIENT INFO names it.
_FAST_NAMES: Final = ("", "get", "set")

# Commands that set up or end a connection touch no data and never count against a rate
# limit: a client over its limit can still connect (redis-py's handshake is HELLO and
# CLIENT SETINFO), authenticate and leave.
_UNMETERED: Final = frozenset({b"auth", b"hello", b"client", b"quit", b"reset"})

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
    # One limiter for every connection and door, keyed by the principal's namespace: this
    # process's own, or a shared one (Redis) that is asked without blocking the loop.
    limiter: RateLimiter | SharedLimiter = field(default_factory=LocalLimiter)
    auth_throttle: AuthThrottle = field(default_factory=AuthThrottle)
    max_clients: int = 10000
    auth_timeout: float = 10.0  # seconds an unauthenticated connection may stay (strict)
    max_query_buffer: int = MAX_REQUEST_BYTES
    # Whether the direct path may use the C hot path (stashd._fastpath) when it is built;
    # tests turn it off to hold it to the Python path's answers.
    fastpath: bool = _fastpath is not None

    def __post_init__(self) -> None:
        """Every door shares one batcher per store, so their work is grouped together."""
        if self.batcher is None:
            self.batcher = Batcher(self.store)

    def close_connections_of(self, key_ids: Collection[str]) -> int:
        """Close every connection authenticated with one of these (revoked) keys."""
        closed = 0
        for conn in list(self.connections):
            session = conn.session
            principal = None if session is None else session.principal
            if principal is not None and principal.key_id in key_ids:
                conn.deauthenticate()
                closed += 1
        return closed


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
        self._close_after_batch = False  # close once the batch in flight has replied
        self._rate: Rate | None = None  # the principal's rate limit, None when unlimited
        self._auth_timer: asyncio.TimerHandle | None = None
        # The memory store's view, when the direct path may be used at all.
        view = getattr(ctx.store, "view", None)
        direct_ok = ctx.store.inline and not ctx.log_writes and hasattr(view, "put_value")
        self._view: Any = view if direct_ok else None
        self._fast = _fastpath.run if direct_ok and ctx.fastpath else None

    # -- asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start anonymous: open mode gives the default namespace, strict mode nothing."""
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast("asyncio.Transport", transport)
        ctx = self.ctx
        peer = transport.get_extra_info("peername")
        if len(ctx.connections) >= ctx.max_clients:
            self._refuse(peer)
            return
        local = transport.get_extra_info("sockname")
        self.session = Session(
            ctx.service,
            ctx.keyring,
            ctx.keyring.anonymous(),
            peer=_addr(peer),
            local=_addr(local),
            throttle=ctx.auth_throttle,
            address=str(peer[0]) if isinstance(peer, tuple) and peer else str(peer or ""),
            max_clients=ctx.max_clients,
        )
        self._apply_limits()
        ctx.connections.add(self)

    def _refuse(self, peer: Any) -> None:  # noqa: ANN401 - whatever the transport reports
        """Over --max-clients: Redis's error, then close; the connection never counts."""
        assert self.transport is not None
        out = bytearray()
        encode(MaxClients(), 2, out)
        self.transport.write(out)
        self.transport.close()
        logger.info("max_clients_reached", peer=_addr(peer), max_clients=self.ctx.max_clients)

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002 - asyncio API
        """Forget the connection; a batch still in flight finishes without it."""
        self.ctx.connections.discard(self)
        self.transport = None
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None

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
        session = self.session
        if (
            self._view is None
            or session is None
            or session.principal is None
            or session.multi is not None
            or self._rate is not None
        ):
            items = self.reader.feed(data)
            if items:
                self._dispatch(items)
            return
        # The direct path. One clock read per read from the socket: everything in it
        # arrived at the same moment.
        now = self.ctx.store.clock()
        out = bytearray()
        reader = self.reader
        if self._fast is not None and reader.idle:
            # Leading plain GETs and SETs run in C; it stops at anything else, at a
            # request boundary, and the rest of the read takes the path below.
            p = session.principal
            done = self._fast(
                data,
                self.ctx.store,
                p.namespace,
                Entry,
                now,
                p.limits.default_ttl_ms,
                reader.max_bulk,
                reader.max_payload,
                reader.max_request,
                session.proto,
                out,
            )
            if done & 3:
                session.last_command = _FAST_NAMES[done & 3]
            done >>= 2
            if done == len(data):
                if self.transport is not None:
                    self.transport.write(out)
                return
            if done:
                data = data[done:]
        items = reader.feed(data)
        if items:
            self._dispatch_direct(items, session, self._view, now, out)
        elif out and self.transport is not None:
            self.transport.write(out)

    def _dispatch_direct(
        self,
        items: list[Any],
        session: Session,
        view: Any,  # noqa: ANN401
        now: int,
        out: bytearray,
    ) -> None:
        """Run leading GET/SET-like requests at once, the rest generally.

        Only for an inline store, an authenticated connection outside MULTI, and with
        per-write log events off (they need the operation object). ``out`` holds the
        replies already encoded for this read.
        """
        i = 0
        for args in items:
            if type(args) is not list:
                break
            cmd = DIRECT.get(args[0])
            if cmd is None:
                break
            try:
                if not cmd.direct(session, args, view, now, out):  # type: ignore[misc]
                    break
            except StashError as exc:
                encode(exc, session.proto, out)
            i += 1
        if i:
            session.last_command = items[i - 1][0].decode().lower()
        if i == len(items):
            if self.transport is not None:
                self.transport.write(out)
            return
        self._dispatch(items[i:] if i else items, out)

    # -- dispatch ---------------------------------------------------------------------
    def _apply_limits(self) -> None:
        """Set the caps, rate and auth deadline of the current principal (or of none)."""
        session = self.session
        assert session is not None
        principal = session.principal
        if principal is None:
            self.reader.set_limits(
                max_args=PREAUTH_MAX_ARGS,
                max_bulk=PREAUTH_MAX_BULK,
                max_payload=PREAUTH_MAX_BULK,
                authenticated=False,
            )
            self._rate = None
            if self._auth_timer is None and self.transport is not None:
                self._auth_timer = asyncio.get_running_loop().call_later(
                    self.ctx.auth_timeout, self._auth_timed_out
                )
        else:
            self.reader.set_limits(
                max_args=MAX_ARGS,
                max_bulk=MAX_BULK,
                max_payload=principal.limits.max_payload,
                max_request=self.ctx.max_query_buffer,
            )
            self._rate = principal.limits.rate
            if self._auth_timer is not None:
                self._auth_timer.cancel()
                self._auth_timer = None

    def _auth_timed_out(self) -> None:
        """Strict mode: a connection that has not authenticated in time is closed."""
        self._auth_timer = None
        session = self.session
        if self.transport is not None and session is not None and session.principal is None:
            logger.info("auth_timeout", peer=session.peer, seconds=self.ctx.auth_timeout)
            self.close_when_idle()

    def _over_rate(self, rate: Rate) -> _Encoded | None:
        """Count one command against the principal's rate; the encoded refusal when over."""
        session = self.session
        assert session is not None
        assert session.principal is not None
        decision = cast("RateLimiter", self.ctx.limiter).acquire(session.principal.namespace, rate)
        return None if decision.allowed else _refusal(decision.retry_after_ms)

    def deauthenticate(self) -> None:
        """The key was revoked: nothing more runs as its principal, and the connection closes."""
        session = self.session
        if session is None:
            return
        logger.info("connection_closed_key_revoked", peer=session.peer)
        session.principal = None
        self._apply_limits()
        self.close_when_idle()

    def _dispatch(
        self, items: list[Any], out: bytearray | None = None, turn: _Turn | None = None
    ) -> None:
        """Run each request in order; ``out`` holds replies already encoded for this read.

        The loop can pause: for a reply that must be awaited (AUTH against a key registry
        in Redis) and, with a shared limiter, for the rate decision on the read's
        metered commands. It then saves where it was in a :class:`_Turn`, stops reading,
        and is called again with that turn once the answer is in.
        """
        session = self.session
        transport = self.transport
        if session is None or transport is None:
            return
        ctx = self.ctx
        store = ctx.store
        inline = store.inline
        log_writes = ctx.log_writes
        # A store that can answer reads at once (SQLite in WAL mode) does, as long as no
        # earlier request of this read is still waiting for its batch.
        inline_reads = store.inline_reads
        run_now = store.run if inline else store.read_now
        rate = self._rate
        ready: tuple[Any, Principal | None, Any, list[bytes]] | None = None
        if turn is None:
            replies: list[Any] = []
            pending: list[tuple[int, Deferred, Any]] = []  # (reply slot, deferred, command)
            close = False
            proto = start_proto = session.proto
            # Everything in one read arrives at one instant: once a command of it is over
            # the rate, so is every later metered one, and they share the refusal (a
            # flooding client is turned away without a limiter call per command).
            refused: _Encoded | None = None
            allowance: _Allowance | None = None
            pos = 0
        else:
            replies, pending, close = turn.replies, turn.pending, turn.close
            proto, start_proto, refused = turn.proto, turn.start_proto, turn.refused
            allowance, pos, out, ready = turn.allowance, turn.pos, turn.out, turn.ready
        n = len(items)
        while True:
            if ready is not None:
                reply, before, cmd, args = ready
                ready = None
            else:
                if pos >= n:
                    break
                args = items[pos]
                pos += 1
                if type(args) is not list:
                    # A per-request refusal from the framing guard, or a protocol error.
                    replies.append(args)
                    if isinstance(args, ProtocolError):
                        close = True
                        break
                    continue
                name = args[0].lower()
                cmd = TABLE.get(name)
                if rate is not None and name not in _UNMETERED:
                    if refused is None:
                        limiter = ctx.limiter
                        if not hasattr(limiter, "request"):
                            refused = self._over_rate(rate)
                        elif allowance is None:
                            wanted = _metered(items, pos - 1)
                            turn = _Turn(
                                replies, pending, close, proto, start_proto, refused, None,
                                pos - 1, out, None,
                            )  # fmt: skip
                            self._ask_rate(
                                cast("SharedLimiter", limiter), rate, wanted, items, turn
                            )
                            return
                        elif allowance.left:
                            allowance.left -= 1
                        else:
                            refused = allowance.refusal
                    if refused is not None:
                        replies.append(refused)
                        if session.multi is not None:
                            session.multi_dirty = True
                        continue
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
                nargs = len(args)
                if (arity > 0 and nargs != arity) or nargs < -arity:
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
                if type(reply) is Awaiting:
                    turn = _Turn(
                        replies, pending, close, proto, start_proto, refused, allowance,
                        pos, out, None,
                    )  # fmt: skip
                    self._await_reply(reply, (before, cmd, args), items, turn)
                    return
            if session.principal is not before:
                self._apply_limits()
                rate = self._rate
                refused = None
                allowance = None
            if session.proto != proto:
                # HELLO or RESET: this reply and later ones use the new protocol, earlier
                # ones keep the protocol they were run under, as in Redis.
                proto = session.proto
                replies.append(_Proto(proto))
            if type(reply) is Deferred:
                if inline or (inline_reads and not pending and not reply.op.writes):
                    try:
                        result = run_now(reply.op)
                    except StashError as exc:
                        replies.append(exc)
                        continue
                    if log_writes and WRITE in cmd.flags:
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
        shift = 0
        if proto != start_proto:
            replies.insert(0, _Proto(start_proto))
            shift += 1
        if out:
            replies.insert(0, _Encoded(out))
            shift += 1
        if shift:
            for i, (slot, deferred, command) in enumerate(pending):
                pending[i] = (slot + shift, deferred, command)
        if pending:
            self._wait_for(pending, replies, close)
            return
        if turn is None:
            self._send(replies, close)
            return
        self._answer_paused(replies, close)

    def _answer_paused(self, replies: list[Any], close: bool) -> None:
        """Answer a read whose dispatch had paused, then read again unless closing."""
        closing = close or self._close_after_batch
        self._send(replies, closing)
        if self.transport is not None and not closing and not self._paused_for_writes:
            self.transport.resume_reading()

    def _pause(self) -> None:
        """Stop reading while a read's dispatch waits for an answer."""
        self._waiting = True
        if self.transport is not None:
            self.transport.pause_reading()

    def _ask_rate(
        self, limiter: SharedLimiter, rate: Rate, wanted: int, items: list[Any], turn: _Turn
    ) -> None:
        """Ask the shared limiter for the read's metered commands; resume with the grant."""
        session = self.session
        assert session is not None
        assert session.principal is not None
        self._pause()

        def done(grant: Grant) -> None:
            self._waiting = False
            refusal = None
            if grant.granted < wanted:
                refusal = _refusal(grant.decision.retry_after_ms)
            turn.allowance = _Allowance(grant.granted, refusal)
            self._dispatch(items, turn=turn)

        limiter.request(session.principal.namespace, rate, wanted, done)

    def _await_reply(
        self, reply: Awaiting, context: tuple[Any, Any, list[bytes]], items: list[Any], turn: _Turn
    ) -> None:
        """Await a reply's first step (a remote key lookup); resume with its finished reply."""
        self._pause()
        before, cmd, args = context

        async def wait() -> None:
            try:
                result = reply.finish(await reply.start())
            except StashError as exc:
                result = exc
            except Exception as exc:  # a bug must not leave the connection paused for good
                logger.exception("deferred_reply_failed", command=cmd.name)
                result = StoreUnavailable(type(exc).__name__)
            self._waiting = False
            turn.ready = (result, before, cmd, args)
            self._dispatch(items, turn=turn)

        task = asyncio.get_running_loop().create_task(wait())
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)

    def _wait_for(
        self, pending: list[tuple[int, Deferred, Any]], replies: list[Any], close: bool
    ) -> None:
        """Hand the operations to the batcher; reply once they have committed."""
        batcher = self.ctx.batcher
        assert batcher is not None
        self._pause()
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
            self._answer_paused(replies, close)

        batcher.submit([d.op for _, d, _ in pending], done)

    def _send(self, replies: list[Any], close: bool) -> None:
        transport = self.transport
        session = self.session
        if transport is None or session is None:
            return
        out = bytearray()
        proto = session.proto
        for reply in replies:
            kind = type(reply)
            if kind is _Encoded:
                out += reply.data
            elif kind is _Proto:
                proto = reply.proto
            else:
                encode(reply, proto, out)
        if out:
            transport.write(out)
        if close:
            self._closing = True
            transport.close()

    def close_when_idle(self) -> None:
        """Close now if no batch is in flight, else right after it replies."""
        if self.transport is None:
            return
        if self._waiting:
            self._close_after_batch = True
        else:
            self.transport.close()


class _Encoded:
    """Replies the direct path already encoded, standing first among a read's replies."""

    __slots__ = ("data",)

    def __init__(self, data: bytearray) -> None:
        self.data = data


def _refusal(retry_after_ms: int) -> _Encoded:
    """The encoded RATELIMIT reply, shared by every command a read has over the rate."""
    out = bytearray()
    encode(RateLimited(retry_after_ms), 2, out)  # errors read the same in RESP3
    return _Encoded(out)


class _Proto:
    """Among a read's replies: those after it are encoded in this protocol version."""

    __slots__ = ("proto",)

    def __init__(self, proto: int) -> None:
        self.proto = proto


class _Allowance:
    """A shared limiter's grant for one read.

    ``left`` metered commands may still run; ``refusal`` is the encoded reply of the
    ones after them.
    """

    __slots__ = ("left", "refusal")

    def __init__(self, left: int, refusal: _Encoded | None) -> None:
        self.left = left
        self.refusal = refusal


class _Turn:
    """Where a paused dispatch stopped: its replies so far and the loop's state."""

    __slots__ = (
        "allowance",
        "close",
        "out",
        "pending",
        "pos",
        "proto",
        "ready",
        "refused",
        "replies",
        "start_proto",
    )

    def __init__(  # noqa: PLR0917 - the loop's locals, saved and restored as they are
        self,
        replies: list[Any],
        pending: list[tuple[int, Deferred, Any]],
        close: bool,
        proto: int,
        start_proto: int,
        refused: _Encoded | None,
        allowance: _Allowance | None,
        pos: int,
        out: bytearray | None,
        ready: tuple[Any, Principal | None, Any, list[bytes]] | None,
    ) -> None:
        self.replies = replies
        self.pending = pending
        self.close = close
        self.proto = proto
        self.start_proto = start_proto
        self.refused = refused
        self.allowance = allowance
        self.pos = pos
        self.out = out
        self.ready = ready


# Tasks awaiting a reply's first step: kept referenced until done.
_TASKS: set[asyncio.Task[None]] = set()

# Commands after which the principal (and so the rate) may change.
_PRINCIPAL_CHANGES: Final = frozenset({b"auth", b"hello", b"reset"})


def _metered(items: list[Any], start: int) -> int:
    """How many metered commands a read holds from ``start`` on.

    Counting stops at the first command that may change the principal (AUTH, HELLO,
    RESET): this is what a connection asks a shared limiter for at once.
    """
    wanted = 0
    for args in items[start:]:
        if type(args) is not list:
            continue
        name = args[0].lower()
        if name in _PRINCIPAL_CHANGES:
            break
        if name not in _UNMETERED:
            wanted += 1
    return max(wanted, 1)


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
        fields["ttl_seconds"] = seconds_left(expires_at, wall_clock_ms())
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
