"""A door's listening sockets: each connection asks the shared client count before it exists.

asyncio's ``create_server`` makes the transport and protocol of every connection it
accepts, and a transport closes its socket a turn of the loop later at the earliest: a
burst of connects over the limit would each hold a descriptor meanwhile (hundreds at
once), and a full process leaves clients in the kernel's backlog. So each door accepts
here, as Redis does: a readable listening socket is accepted from at once, a connection
over ``--max-clients`` is answered with the door's refusal and closed before the next
is accepted (one descriptor at a time), and only an admitted one, already counted, is
handed to the loop (``loop.connect_accepted_socket``) with its :class:`Slot`.

Should the process run out of descriptors all the same (something other than client
sockets took them), a spare one is closed to accept and answer the waiting clients,
and opened again: libuv's answer to EMFILE, so no client is left hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import socket
from typing import TYPE_CHECKING, Any, Final

from stashd import log

if TYPE_CHECKING:
    from collections.abc import Callable

    from stashd.admission import ClientSlots, Slot

logger = log.get("stashd.listener")

#: Connections the kernel queues before they are accepted: Redis's tcp-backlog. asyncio's
#: default of 100 drops SYNs under a burst of connects (1,000 took 8 s instead of 0.02).
LISTEN_BACKLOG: Final = 511
#: One readable event accepts at most this many connections (Redis's
#: MAX_ACCEPTS_PER_CALL), so a flood of connects cannot hold the loop; the rest are
#: accepted in the next turn.
MAX_ACCEPTS_PER_CALL: Final = 1000
#: A refused connection's bytes already received are read and dropped, up to this many,
#: before it is closed: closing a socket with unread bytes sends a reset, and a client
#: that gets one may lose the answer before reading it.
DRAIN_BYTES: Final = 64 * 1024
#: A refused connection is kept this long after its answer, half-closed, reading and
#: dropping what its client still sends: closed at once, a request that arrives after the
#: answer makes the kernel reset the connection, and a reset can destroy the answer
#: before the client has read it.
LINGER_S: Final = 1.0
#: At most this many refused connections linger at once (a descriptor each); past it
#: they are closed at once, as when descriptors run out.
MAX_LINGERING: Final = 64

# accept() errors that mean the process or system is out of something, not the client.
_EXHAUSTED: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def address(addr: Any) -> str:  # noqa: ANN401 - whatever the socket reports
    """A peer or local address as ``host:port`` (``[host]:port`` for IPv6)."""
    if isinstance(addr, tuple) and len(addr) >= 2:
        host = addr[0]
        return f"[{host}]:{addr[1]}" if ":" in str(host) else f"{host}:{addr[1]}"
    return str(addr or "")


class Listener:
    """One door's listening sockets, admitting connections through the shared count.

    ``factory`` makes the door's protocol for an admitted connection, given its slot,
    which the protocol releases when the connection is lost. ``refusal`` is what a
    connection over the limit is sent before it is closed.
    """

    def __init__(
        self,
        door: str,
        slots: ClientSlots,
        factory: Callable[[Slot], asyncio.Protocol],
        refusal: bytes,
    ) -> None:
        self.door = door
        self.slots = slots
        self.factory = factory
        self.refusal = refusal
        self.sockets: list[socket.socket] = []
        self.active = 0  # connections this listener admitted that still hold their slot
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lingering: set[socket.socket] = set()
        self._handing: set[asyncio.Task[Any]] = set()  # admitted, transport not made yet
        self._idle: asyncio.Event | None = None
        self._spare: int | None = None  # the descriptor given up to answer on EMFILE

    @property
    def port(self) -> int:
        """The port of the first listening socket (the one bound, with port 0)."""
        port: int = self.sockets[0].getsockname()[1]
        return port

    async def start(
        self,
        host: str | None = None,
        port: int = 0,
        *,
        sock: socket.socket | None = None,
        backlog: int = LISTEN_BACKLOG,
    ) -> int:
        """Listen on ``host``/``port`` (every address it resolves to), or on ``sock``.

        Returns the bound port. Binding works as ``loop.create_server`` with
        ``reuse_address=True`` does: IPv6 sockets are IPv6-only, a name that resolves to
        several addresses gets a socket on each.
        """
        self._loop = loop = asyncio.get_running_loop()
        if sock is not None:
            sock.listen(backlog)
            self.sockets = [sock]
        else:
            self.sockets = await _bind(loop, host, port, backlog)
        with contextlib.suppress(OSError):
            self._spare = os.open(os.devnull, os.O_RDONLY)
        for listening in self.sockets:
            listening.setblocking(False)
            tcp = listening.family in (socket.AF_INET, socket.AF_INET6)
            loop.add_reader(listening.fileno(), self._accept, listening, tcp)
        return self.port

    def _accept(self, listening: socket.socket, tcp: bool) -> None:
        """Accept what is waiting: admit each connection, or answer it and close it."""
        slots = self.slots
        for _ in range(MAX_ACCEPTS_PER_CALL):
            try:
                conn, peer = listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the client gave up while queued
            except OSError as exc:
                if exc.errno in _EXHAUSTED:
                    self._shed(listening)
                else:
                    logger.exception("accept_failed", door=self.door)
                return
            slot = slots.take(self._released)
            if slot is None:
                self._refuse(conn, peer, "max_clients")
            else:
                self.active += 1
                self._hand_over(conn, slot, tcp)

    def _hand_over(self, conn: socket.socket, slot: Slot, tcp: bool) -> None:
        """Give an admitted socket to the loop, with the door's protocol holding its slot."""
        loop = self._loop
        assert loop is not None
        if tcp:
            # Replies go out as written, as Redis's and asyncio's own servers send them
            # (asyncio's connect_accepted_socket leaves Nagle on).
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task = loop.create_task(
            loop.connect_accepted_socket(functools.partial(self.factory, slot), conn)
        )
        self._handing.add(task)
        task.add_done_callback(functools.partial(self._handed, conn, slot))

    def _handed(self, conn: socket.socket, slot: Slot, task: asyncio.Task[Any]) -> None:
        """A connection that never got going gives its slot back and is closed."""
        self._handing.discard(task)
        if task.cancelled() or task.exception() is not None:
            if not task.cancelled():
                error = str(task.exception())
                logger.warning("connection_setup_failed", door=self.door, error=error)
            slot.release()
            conn.close()

    def _refuse(self, conn: socket.socket, peer: Any, reason: str) -> None:  # noqa: ANN401
        """Answer a connection turned away, then let it go; it never holds a slot.

        It lingers half-closed for :data:`LINGER_S` when it can (see there); out of
        descriptors, or with many lingering already, it is closed at once.
        """
        lingers = False
        try:
            conn.setblocking(False)
            conn.send(self.refusal)  # a fresh socket's send buffer takes it whole
            _drain(conn)
            loop = self._loop
            if reason != "fd_limit" and loop is not None and len(self._lingering) < MAX_LINGERING:
                conn.shutdown(socket.SHUT_WR)  # the answer, then the end of it
                self._lingering.add(conn)
                loop.add_reader(conn.fileno(), self._linger_read, conn)
                loop.call_later(LINGER_S, self._linger_end, conn)
                lingers = True
        except OSError:
            pass  # the client has gone already
        finally:
            if not lingers:
                self._lingering.discard(conn)
                conn.close()
        self.slots.refused(self.door, address(peer), reason)

    def _linger_read(self, conn: socket.socket) -> None:
        """Drop what a refused client still sends; its end of the stream ends the linger."""
        try:
            data = conn.recv(DRAIN_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._linger_end(conn)

    def _linger_end(self, conn: socket.socket) -> None:
        """Close a refused connection that lingered (once, whichever comes first)."""
        if conn not in self._lingering:
            return
        self._lingering.discard(conn)
        if self._loop is not None:
            with contextlib.suppress(OSError, ValueError):
                self._loop.remove_reader(conn.fileno())
        conn.close()

    def _shed(self, listening: socket.socket) -> None:
        """Out of descriptors: free the spare one to answer the queued clients, then retake it."""
        if self._spare is None:
            logger.error("accept_failed", door=self.door, error="out of file descriptors")
            return
        os.close(self._spare)
        self._spare = None
        try:
            for _ in range(MAX_ACCEPTS_PER_CALL):
                try:
                    conn, peer = listening.accept()
                except OSError:
                    break
                self._refuse(conn, peer, "fd_limit")
        finally:
            with contextlib.suppress(OSError):
                self._spare = os.open(os.devnull, os.O_RDONLY)

    def _released(self) -> None:
        self.active -= 1
        if not self.active and self._idle is not None:
            self._idle.set()

    def close(self) -> None:
        """Stop accepting; connections already admitted stay until they end."""
        loop = self._loop
        for listening in self.sockets:
            if loop is not None and listening.fileno() >= 0:
                loop.remove_reader(listening.fileno())
            listening.close()
        for task in list(self._handing):
            task.cancel()
        for conn in list(self._lingering):
            self._linger_end(conn)
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None

    async def wait_closed(self) -> None:
        """Return once every connection this listener admitted has ended."""
        if not self.active:
            return
        if self._idle is None:
            self._idle = asyncio.Event()
        await self._idle.wait()


def _drain(conn: socket.socket) -> None:
    """Read and drop what a refused client already sent (at most DRAIN_BYTES)."""
    left = DRAIN_BYTES
    while left > 0:
        try:
            data = conn.recv(left)
        except (BlockingIOError, InterruptedError):
            return
        if not data:
            return
        left -= len(data)


async def _bind(
    loop: asyncio.AbstractEventLoop, host: str | None, port: int, backlog: int
) -> list[socket.socket]:
    """Listening sockets on every address ``host`` resolves to, as create_server binds."""
    infos = await loop.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    sockets: list[socket.socket] = []
    seen: set[tuple[Any, ...]] = set()
    try:
        for family, kind, proto, _, addr in infos:
            if (family, addr) in seen:
                continue
            seen.add((family, addr))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            if os.name == "posix":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(addr)
            except OSError as exc:
                why = (exc.strerror or str(exc)).lower()
                msg = f"error while attempting to bind on address {addr!r}: {why}"
                raise OSError(exc.errno, msg) from None
            sock.listen(backlog)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets
