"""The RESP server: one asyncio Protocol per connection, dispatching pipelined requests.

Everything a read completes is dispatched in order and answered with one write. On a
store that needs no I/O (memory) operations run inline, and so do operations that only
read on a store that offers it (SQLite); otherwise the operations of a read go to the
:class:`Batcher`, which gathers what every connection asked for in one
turn of the loop and runs it as one batch (one SQLite transaction), and the replies are
written only after that batch has returned, so an acknowledged write is durable.

No connection holds the loop for long or makes the server hold its replies without
bound: a read's requests are run in slices (a few milliseconds, or a few hundred KiB of
replies, each), the rest kept until the slice's replies are written and the socket has
room again, and the client output buffer limits cut a connection that still leaves too
much unread.

Each read is served by one generator, :meth:`Connection._serve`: where it must wait (a
shared limiter's grant, an awaited reply, a batch's commit, room in the socket) it
yields, and it is resumed with the answer, so there is one way to wait.

(This module is longer than most, about 800 lines, because a connection is one piece:
its framing limits, its authentication deadline, the serving of its reads and its
output limits share the connection's state and are read together.)
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, cast

from stashd import log
from stashd.admission import ClientSlots
from stashd.batch import Batcher
from stashd.commands import TABLE
from stashd.commands.base import NOAUTH, Awaiting, Deferred, Session, name_writes
from stashd.commands.pubsub import SUBSCRIBED_ALLOWED, SubscribedOnly
from stashd.commands.transactions import CONTROL as TXN_CONTROL
from stashd.commands.transactions import discard as discard_transaction
from stashd.connbudget import ConnectionBudget
from stashd.cost import (
    CONNECTION,
    FREE,
    TRANSACTION,
    command_cost,
    op_debt,
    steps_debt,
    transaction_cost,
)
from stashd.errors import (
    InternalError,
    MaxClients,
    NoAuth,
    ProtocolError,
    RateLimited,
    StashError,
    StoreUnavailable,
    UnknownCommand,
    WrongArity,
)
from stashd.listener import Listener
from stashd.listener import address as _addr
from stashd.outputlimit import DEFAULT as DEFAULT_OUTPUT_LIMITS
from stashd.outputlimit import OutputLimit, OutputLimits
from stashd.pubsub import Hub, Message, Subscriber
from stashd.ratelimit import LocalLimiter, RateLimiter
from stashd.resp import (
    MAX_ARGS,
    MAX_BULK,
    MAX_REQUEST_BYTES,
    PREAUTH_MAX_ARGS,
    PREAUTH_MAX_BULK,
    Push,
    ReplyTooLarge,
    RequestReader,
    encode,
)
from stashd.tenancy import AuthThrottle
from stashd.watchlog import WatchLog

if TYPE_CHECKING:
    from collections.abc import Collection

    from stashd.admission import Slot
    from stashd.events import WriteEvents
    from stashd.ratelimit import Grant, Rate, SharedLimiter
    from stashd.service import MemoryService
    from stashd.store.base import Store
    from stashd.tenancy import Keyring

logger = log.get("stashd.server")

#: What a served read yields when it must wait: a function that starts the wait and
#: calls its argument with the answer once there is one.
Wait = Callable[[Callable[[Any], None]], None]
#: A read being served (:meth:`Connection._serve`): it yields waits, gets answers back.
Serving = Generator[Wait, Any, None]

QUEUED: Final = "QUEUED"

# One slice of a connection's requests ends once it has run this long, encoded this many
# reply bytes, or queued this many operations for a batch; the rest waits for the next
# turn of the loop (and, if the client is not reading, for its socket to drain). Small
# enough that other clients wait a few milliseconds at most behind one pipeline, large
# enough that a pipeline still costs one write per slice, not one per reply.
SLICE_SECONDS: Final = 0.005
SLICE_BYTES: Final = 256 * 1024
SLICE_OPS: Final = 256
# The clock is read once per this many requests, and after any request with more
# arguments than this (a multi-key command costs in proportion to its keys).
_CLOCK_EVERY: Final = 16

# The most requests one question to a shared limiter asks about: a read of more asks
# again for the rest once these are granted (at most a burst is ever granted at once).
ASK_MAX: Final = 256

# Names that only arrive when a browser or HTTP client is tricked into talking to us;
# Redis closes the connection on them, and so do we.
_HTTP_LINES: Final = frozenset({b"post", b"host:"})


@dataclass(eq=False)
class ServerContext:
    """What every connection of one server shares."""

    service: MemoryService
    keyring: Keyring
    store: Store
    # The daemon's write events (stashd.events), noted by the batcher; None: not logged.
    events: WriteEvents | None = None
    connections: set[Connection] = field(default_factory=set)
    batcher: Batcher | None = None
    # One limiter for every connection and door, keyed by the principal's namespace: this
    # process's own, or a shared one (Redis) that is asked without blocking the loop.
    limiter: RateLimiter | SharedLimiter = field(default_factory=LocalLimiter)
    # The connection commands' budget (AUTH, HELLO, CLIENT...), per connection and address.
    connection_budget: ConnectionBudget = field(default_factory=ConnectionBudget)
    auth_throttle: AuthThrottle = field(default_factory=AuthThrottle)
    # The one count of client connections, over this door and every other, against
    # --max-clients.
    slots: ClientSlots = field(default_factory=ClientSlots)
    auth_timeout: float = 10.0  # seconds an unauthenticated connection may stay (strict)
    max_query_buffer: int = MAX_REQUEST_BYTES
    output_limits: OutputLimits = field(
        default_factory=lambda: OutputLimits.parse(DEFAULT_OUTPUT_LIMITS)
    )
    # Every channel and pattern subscription of this server's connections.
    hub: Hub = field(default_factory=Hub)
    # Each watched namespace's recent keyspace events, numbered (GET /watch resumes by them).
    watch: WatchLog = field(init=False)

    def __post_init__(self) -> None:
        """Every door shares one batcher per store, so their work is grouped together."""
        if self.batcher is None:
            self.batcher = Batcher(self.store, self.events, self.hub)
        self.watch = WatchLog(self.hub)

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
    """One client connection: framing, authentication state, dispatch, replies.

    ``slot`` is its place in the count of clients (None: not counted, as in tests that
    drive a connection directly); it is released when the connection is lost.
    """

    def __init__(self, ctx: ServerContext, slot: Slot | None = None) -> None:
        self.ctx = ctx
        self.slot = slot
        self.transport: asyncio.Transport | None = None
        self.session: Session | None = None
        self.reader = RequestReader()
        # The read being served while it waits (stashd.server.Connection._serve), and
        # its requests, to which what arrives meanwhile is appended.
        self._serving: Serving | None = None
        self._items: list[Any] | None = None
        # Resumes a served read waiting for the client to read its replies.
        self._on_writable: Callable[[Any], None] | None = None
        self._paused_for_writes = False
        self._closing = False
        self._close_after_batch = False  # close once the batch in flight has replied
        self._rate: Rate | None = None  # the principal's rate limit, None when unlimited
        self._subject = ""  # what the rate is kept under: the principal's namespace
        self._conn_tat = 0.0  # this connection's TAT in the connection budget
        self._auth_timer: asyncio.TimerHandle | None = None
        # When the unsent replies last went over the soft output limit (None: below it),
        # and the timer that checks them again once the soft limit's seconds are up.
        self._soft_since: float | None = None
        self._soft_timer: asyncio.TimerHandle | None = None
        # The replies of the read being served, to which a message delivered meanwhile
        # is added in its place, and how many bytes such messages hold there.
        self._replies: list[Any] | None = None
        self._pushed = 0

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
            throttle=ctx.auth_throttle,
            address=str(peer[0]) if isinstance(peer, tuple) and peer else str(peer or ""),
            clients=ctx.slots,
            output_buffer_limit=ctx.output_limits.render(),
            held=ctx.service.held,
            run=ctx.batcher.run if ctx.batcher is not None else None,
            blocked=ctx.batcher.blocked if ctx.batcher is not None else None,
            hub=ctx.hub,
            make_subscriber=lambda: Subscriber(self._deliver),
        )
        self._apply_limits()
        ctx.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002 - asyncio API
        """Forget the connection; a batch still in flight finishes without it."""
        self.ctx.connections.discard(self)
        if self.slot is not None:
            self.slot.release()
        if self.session is not None:
            self.session.end_multi()  # a queue never sent to EXEC is let go
            if self.session.stop_waiting is not None:
                self.session.stop_waiting()  # a blocked BLPOP leaves no waiter behind
            if self.session.subscriber is not None:
                self.ctx.hub.drop(self.session.subscriber)
        self.transport = None
        self._on_writable = None
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None
        if self._soft_timer is not None:
            self._soft_timer.cancel()
            self._soft_timer = None

    def pause_writing(self) -> None:
        """The client is not reading its replies: stop reading its requests too."""
        self._paused_for_writes = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        """Replies drained: run what is left of the last read, or read again."""
        self._paused_for_writes = False
        self._soft_since = None  # below the low-water mark, so below any soft limit
        resume, self._on_writable = self._on_writable, None
        if resume is not None:
            asyncio.get_running_loop().call_soon(resume, None)
        else:
            self._resume_reading()

    def _resume_reading(self) -> None:
        """Read again unless a read still being served or the client's unread replies hold us."""
        if (
            self.transport is not None
            and not self._closing
            and self._serving is None
            and not self._paused_for_writes
        ):
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        """Parse what the read completed and run it, a slice at a time."""
        items = self.reader.feed(data)
        if not items:
            return
        if self._items is not None:  # a read still being served: these come after it
            self._items += items
            if self._serving is not None and self.transport is not None:
                # A blocking pop listening for a close: one read is kept at most, and
                # reading resumes when the wait ends, as after any wait.
                self.transport.pause_reading()
            return
        self._items = items
        self._drive(self._serve(items))

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
            self._subject = principal.namespace
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

    def _over_connection_budget(self, cost: int) -> _Encoded | None:
        """Spend a connection command's cost from the connection budget; the refusal when over."""
        session = self.session
        assert session is not None
        wait, self._conn_tat = self.ctx.connection_budget.admit(
            self._conn_tat, session.address, cost
        )
        return _refusal(wait) if wait else None

    def _charge(self, units: int) -> None:
        """Charge work learned after a request ran to the principal's rate, as a debt."""
        session = self.session
        rate = self._rate
        if units and rate is not None and session is not None and session.principal is not None:
            self.ctx.limiter.charge(session.principal.namespace, rate, units)

    def deauthenticate(self) -> None:
        """The key was revoked: nothing more runs as its principal, and the connection closes."""
        session = self.session
        if session is None:
            return
        logger.info("connection_closed_key_revoked", peer=session.peer)
        session.principal = None
        self._apply_limits()
        self.close_when_idle()

    def _serve(self, items: list[Any]) -> Serving:
        """Run a read's requests in order, answering them a slice at a time.

        This generator is the connection's one way to wait: where a request needs
        something that is not here yet, it yields a :data:`Wait` (a function taking the
        callback that resumes it) and gets the answer back from the yield, its locals
        intact. It waits for a shared limiter's grant, for a reply's awaited first step
        (a key lookup in Redis), for a batch to commit, and, between slices, for the
        next turn of the loop with room in the socket. Requests that arrive meanwhile
        are appended to ``items`` and served in turn.
        """
        session = self.session
        assert session is not None
        ctx = self.ctx
        batcher = ctx.batcher
        assert batcher is not None
        limiter = ctx.limiter
        rate, subject = self._rate, self._subject
        replies: list[Any] = []
        self._replies = replies
        # (reply slot, deferred, command name) of operations waiting for a batch
        pending: list[tuple[int, Deferred, str]] = []
        proto = start_proto = session.proto
        close = False
        # Everything in one read arrives at one instant: once a command of it is over the
        # rate, so is every later metered one, and they share the refusal (a flooding
        # client is turned away without a limiter call per command).
        refused: _Encoded | None = None
        # A shared limiter's grant: how many more metered commands it covers, and the
        # refusal of those after them (None: all that were asked about were granted).
        left, later = 0, cast("_Encoded | None", None)
        over: _Encoded | None = None  # the connection budget's refusal, once there is one
        out = bytearray()
        started = time.perf_counter()
        pos = checked = 0
        while pos < len(items):
            if pos - checked >= _CLOCK_EVERY or (
                pos > checked
                and type(items[pos - 1]) is list
                and len(items[pos - 1]) > _CLOCK_EVERY
            ):
                # The slice so far: encode what is ready, so its size is known.
                checked = pos
                if not pending and replies:
                    start_proto = _encode_replies(replies, start_proto, out)
                    replies.clear()
                if (
                    len(out) >= SLICE_BYTES
                    or len(pending) >= SLICE_OPS
                    or time.perf_counter() - started >= SLICE_SECONDS
                ):
                    if pending:
                        yield from self._settle(batcher, pending, replies)
                        pending = []
                    if not self._answer(_leading(out, start_proto, proto) + replies, close=False):
                        return
                    replies, out, start_proto = [], bytearray(), proto
                    self._replies = replies
                    yield self._next_slice
                    if self.transport is None or self._closing:
                        return
                    started = time.perf_counter()
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
            if name in CONNECTION:
                # Their own budget, per connection and address (stashd.connbudget); as
                # with the rate, a refusal stands for the rest of the read.
                if name != FREE:
                    if over is None:
                        over = self._over_connection_budget(command_cost(cmd, args))
                    if over is not None:
                        replies.append(over)
                        if session.multi is not None:
                            session.multi_dirty = True
                        continue
            elif rate is not None and (
                cost := command_cost(cmd, args)
                if name not in TRANSACTION
                else transaction_cost(name, len(args), session.multi)
            ):
                if refused is None:
                    if not limiter.shared:
                        if wait := cast("RateLimiter", limiter).wait_ms(subject, rate, cost):
                            refused = _refusal(wait)
                    elif left:
                        left -= 1
                    elif later is not None:
                        refused = later
                    else:  # ask about this command and the metered ones after it
                        costs = _metered(items, pos, cost, min(ASK_MAX, rate.burst + 1))
                        grant: Grant = yield functools.partial(
                            cast("SharedLimiter", limiter).request, subject, rate, costs
                        )
                        if self.transport is None:
                            return
                        if grant.granted < len(costs):
                            later = _refusal(grant.decision.retry_after_ms)
                        if grant.granted:
                            left = grant.granted - 1
                        else:
                            refused = later
                if refused is not None:
                    replies.append(refused)
                    if session.multi is not None:
                        if name in TRANSACTION and name != b"multi":
                            # A refused EXEC ends the transaction as DISCARD does, with
                            # nothing run: a client does not expect it to stay open.
                            discard_transaction(session, args)
                        else:
                            session.multi_dirty = True
                    continue
            if cmd is None:
                if name in _HTTP_LINES:
                    logger.warning("http_request_on_resp_port", peer=session.peer)
                    # Nothing of this read is answered but what was already encoded.
                    self._answer(_leading(out, start_proto, start_proto), close=True)
                    return
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
            if (
                session.subscriber is not None
                and session.proto == 2  # RESP3 has pushes, so any command may be sent
                and name not in SUBSCRIBED_ALLOWED
                and session.subscribed
            ):
                replies.append(SubscribedOnly(cmd.name))
                continue
            if session.multi is not None and name not in TXN_CONTROL:
                # Inside MULTI: checked now, run at EXEC.
                try:
                    session.queue(args)
                except StashError as exc:
                    replies.append(exc)
                    session.multi_dirty = True  # EXEC aborts, as after any refusal
                    continue
                replies.append(QUEUED)
                continue
            session.last_command = cmd.name
            before = session.principal
            try:
                reply = name_writes(cmd.handler(session, args), cmd.name)
            except StashError as exc:
                reply = exc
            except Exception as exc:  # noqa: BLE001 - a bug: this command fails, not the connection
                reply = _internal_error(cmd.name, exc)
            if type(reply) is Awaiting:
                reply = yield functools.partial(self._awaited, reply, cmd.name)
                if self.transport is None:
                    return
            if session.principal is not before:
                self._apply_limits()
                rate, subject = self._rate, self._subject
                refused, left, later = None, 0, None
            if session.proto != proto:
                # HELLO or RESET: this reply and later ones use the new protocol, earlier
                # ones keep the protocol they were run under, as in Redis.
                proto = session.proto
                replies.append(_Proto(proto))
            if type(reply) is Deferred:
                op = reply.op
                if batcher.now(op, bool(pending)):
                    replies.append(self._run_now(batcher, reply, cmd.name))
                else:
                    pending.append((len(replies), reply, cmd.name))
                    replies.append(None)
            else:
                replies.append(reply)
            if session.close_after_reply:
                close = True
                break
        if pending:
            yield from self._settle(batcher, pending, replies)
        self._answer(_leading(out, start_proto, proto) + replies, close)

    def _run_now(self, batcher: Batcher, deferred: Deferred, name: str) -> Any:  # noqa: ANN401
        """The reply of an operation run at once on the loop."""
        try:
            result = batcher.run_now(deferred.op)
        except StashError as exc:
            result = exc
        except Exception as exc:  # noqa: BLE001 - a bug in the operation: its command fails
            return _internal_error(name, exc)
        return self._reply(deferred, result, name)

    def _settle(
        self, batcher: Batcher, pending: list[tuple[int, Deferred, str]], replies: list[Any]
    ) -> Serving:
        """Wait for the batch of ``pending`` to commit; put each reply in its slot."""
        results: list[Any] = yield functools.partial(
            batcher.submit, [deferred.op for _, deferred, _ in pending]
        )
        for (slot, deferred, name), result in zip(pending, results, strict=True):
            replies[slot] = self._reply(deferred, result, name)

    def _reply(self, deferred: Deferred, result: Any, name: str) -> Any:  # noqa: ANN401
        """An operation's reply from its result, however it ran; its work charged to the rate.

        A refusal is charged too (an update refused halfway did the work), and is the reply.
        """
        if self._rate is not None:
            self._charge(op_debt(deferred.op, result))
        finish = deferred.finish
        if finish is None or isinstance(result, StashError):
            return result
        try:
            return finish(result)
        except Exception as exc:  # noqa: BLE001 - a bug in the reply: its command fails
            return _internal_error(name, exc)

    def _awaited(self, reply: Awaiting, name: str, done: Callable[[Any], None]) -> None:
        """Await a reply's first step (a remote key lookup) in a task; ``done`` gets the reply."""

        async def wait() -> None:
            try:
                result = reply.finish(await reply.start())
            except StashError as exc:
                result = exc
            except Exception as exc:  # a bug must not leave the connection paused for good
                logger.exception("deferred_reply_failed", command=name)
                result = StoreUnavailable(type(exc).__name__)
            if reply.ran:  # KEYS: what its pages walked
                self._charge(steps_debt(reply.ran))
            done(result)

        task = asyncio.get_running_loop().create_task(wait())
        if reply.listen and self.transport is not None:
            self.transport.resume_reading()
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)

    def _next_slice(self, done: Callable[[Any], None]) -> None:
        """Resume at the next turn of the loop, once the client has room for more replies."""
        if self._paused_for_writes:
            self._on_writable = done
        else:
            asyncio.get_running_loop().call_soon(done, None)

    def _drive(self, serving: Serving, answer: Any = None) -> None:  # noqa: ANN401
        """Run ``serving`` until it waits, reading paused meanwhile, or until it is done."""
        try:
            wait = serving.send(answer)
        except StopIteration:
            waited = self._serving is not None
            self._serving = None
            self._items = None
            self._replies = None
            if self._close_after_batch and self.transport is not None:
                self.transport.close()
            if waited:  # reading was paused for the wait (resuming costs a system call)
                self._resume_reading()
            return
        except Exception:
            # A bug in the dispatch itself: the connection cannot be trusted to keep its
            # replies in order any more, so it is closed, and the server goes on.
            logger.exception("connection_failed")
            self._serving = None
            self._items = None
            if self.transport is not None:
                self.transport.abort()
            return
        if self._serving is None:
            self._serving = serving
            if self.transport is not None:
                self.transport.pause_reading()
        wait(functools.partial(self._drive, serving))

    def _answer(self, replies: list[Any], close: bool) -> bool:
        """Send replies; False once the connection is closing or gone."""
        self._send(replies, close or self._close_after_batch)
        return self.transport is not None and not self._closing

    def _send(self, replies: list[Any], close: bool) -> None:
        """Write the replies, within the output limit; then the next slice, if any."""
        transport = self.transport
        session = self.session
        if transport is None or session is None:
            return
        limit = self._limit()
        out = bytearray()
        try:
            _encode_replies(
                replies,
                session.proto,
                out,
                limit.hard - transport.get_write_buffer_size() if limit.hard else None,
            )
        except ReplyTooLarge:
            # Never built whole: the encoder stopped at the limit.
            self._cut("hard", transport.get_write_buffer_size() + len(out))
            return
        self._pushed = 0
        if out:
            transport.write(out)
        if close:
            self._closing = True
            transport.close()
            return
        self._check_output(transport.get_write_buffer_size())

    def _check_output(self, buffered: int) -> None:
        """Apply the output limits to ``buffered`` unsent bytes; start the soft limit's clock."""
        if not buffered:  # everything sent, as for almost every reply: no limit is near
            self._soft_since = None
            return
        limit = self._limit()
        now = time.monotonic()
        if limit.soft and buffered > limit.soft:
            if self._soft_since is None:
                self._soft_since = now
            if self._soft_timer is None:
                # Rescheduled for what is left: a loop's timers may fire a little early.
                left = self._soft_since + limit.soft_seconds - now
                self._soft_timer = asyncio.get_running_loop().call_later(
                    max(left, 0.001), self._recheck_output
                )
        else:
            self._soft_since = None
        broken = limit.over(buffered, self._soft_since, now)
        if broken is not None:
            self._cut(broken, buffered)

    def _limit(self) -> OutputLimit:
        """The output limit of this connection's class: ``pubsub`` while subscribed."""
        session = self.session
        limits = self.ctx.output_limits
        return limits.pubsub if session is not None and session.subscribed else limits.normal

    def _deliver(self, message: Message) -> None:
        """Send a pub/sub message (a push), within the pubsub class's output limit."""
        transport = self.transport
        session = self.session
        if transport is None or session is None or self._closing:
            return
        out = bytearray()
        encode(Push(message), session.proto, out)
        buffered = transport.get_write_buffer_size()
        replies = self._replies
        if self._items is not None and replies is not None:
            # A read is being served: the message goes among its replies, where it
            # arrived (after the reply of a PUBLISH to oneself, as in Redis).
            replies.append(_Encoded(out))
            self._pushed += len(out)
            limit = self._limit()
            if limit.hard and buffered + self._pushed > limit.hard:
                self._cut("hard", buffered + self._pushed)
            return
        transport.write(out)
        self._check_output(buffered + len(out))

    def _recheck_output(self) -> None:
        """The soft limit's seconds are up: cut the client if it is still over."""
        self._soft_timer = None
        if self.transport is not None and self._soft_since is not None:
            self._check_output(self.transport.get_write_buffer_size())

    def _cut(self, which: str, buffered: int) -> None:
        """Over an output limit: drop the unsent replies and the connection, as Redis does."""
        transport = self.transport
        if transport is None:
            return
        limit = self._limit()
        session = self.session
        logger.warning(
            "client_output_buffer_limit_reached",
            peer=session.peer if session is not None else "",
            limit=which,
            buffered_bytes=buffered,
            limit_bytes=limit.hard if which == "hard" else limit.soft,
            soft_seconds=limit.soft_seconds,
        )
        self._closing = True
        transport.abort()

    def close_when_idle(self) -> None:
        """Close now if no read is being served, else right after it is answered."""
        if self.transport is None:
            return
        if self._serving is not None:
            self._close_after_batch = True
        else:
            self.transport.close()


def listener(ctx: ServerContext) -> Listener:
    """The RESP door's listening sockets: a connection over --max-clients gets Redis's error.

    The error comes before the client sends anything, as Redis sends it, and the
    connection is closed after it; it never held a slot.
    """
    out = bytearray()
    encode(MaxClients(), 2, out)  # an error reads the same in RESP3
    return Listener("resp", ctx.slots, lambda slot: Connection(ctx, slot), bytes(out))


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


# Tasks awaiting a reply's first step: kept referenced until done.
_TASKS: set[asyncio.Task[None]] = set()

# Commands after which the principal (and so the rate) may change.
_PRINCIPAL_CHANGES: Final = frozenset({b"auth", b"hello", b"reset"})


def _metered(items: list[Any], start: int, first: int, most: int) -> list[int]:
    """The costs of the metered commands a read holds: what is asked of a shared limiter.

    ``first`` is the cost of the command the dispatch stands at, ``start`` the position
    of the one after it; at most ``most`` costs. Counting stops before a command that
    may change the principal (AUTH, HELLO, RESET) and before MULTI, EXEC and DISCARD,
    whose cost depends on what the transaction holds by then: the dispatch asks again
    from there.
    """
    costs = [first]
    for args in items[start:]:
        if type(args) is not list:
            continue
        name = args[0].lower()
        if name in _PRINCIPAL_CHANGES or name in TRANSACTION or len(costs) >= most:
            break
        if name not in CONNECTION:
            costs.append(command_cost(TABLE.get(name), args))
    return costs


def _leading(out: bytearray, start_proto: int, proto: int) -> list[Any]:
    """What goes before a slice's remaining replies: those already encoded, and more.

    When the remaining replies start in another protocol than the slice ends in, a
    marker of the one they start in follows.
    """
    lead: list[Any] = []
    if out:
        lead.append(_Encoded(out))
    if start_proto != proto:
        lead.append(_Proto(start_proto))
    return lead


def _encode_replies(
    replies: list[Any], proto: int, out: bytearray, limit: int | None = None
) -> int:
    """Encode a read's replies in order, switching protocol at each marker; the final one.

    With ``limit``, raises :class:`ReplyTooLarge` once ``out`` would pass it.
    """
    for reply in replies:
        kind = type(reply)
        if kind is _Encoded:
            out += reply.data
        elif kind is _Proto:
            proto = reply.proto
        else:
            encode(reply, proto, out, limit)
    if limit is not None and len(out) > limit:
        raise ReplyTooLarge
    return proto


def _internal_error(name: str, exc: Exception) -> InternalError:
    """A command that failed with a bug: logged with its traceback, answered as an error."""
    logger.error("command_failed", command=name, exc_info=exc)
    return InternalError(name, type(exc).__name__)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")
