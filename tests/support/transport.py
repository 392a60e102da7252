"""The server's end of a socket, in process: collects writes, records close."""

from __future__ import annotations


class Transport:
    """A transport that takes every write at once, for driving a Connection directly."""

    def __init__(self, peer: tuple[str, int] = ("127.0.0.9", 5000)) -> None:
        self.out = bytearray()
        self.closed = False
        self.peer = peer

    def get_extra_info(self, name: str) -> object:
        """The peer's address, whatever is asked."""
        return self.peer

    def write(self, data: bytes) -> None:
        """Collect ``data``; nothing may come after close."""
        assert not self.closed, "nothing may be written after close"
        self.out += data

    def pause_reading(self) -> None:
        """Reading is not simulated."""

    def resume_reading(self) -> None:
        """Reading is not simulated."""

    def get_write_buffer_size(self) -> int:
        """Nothing is ever left unsent."""
        return 0

    def close(self) -> None:
        """Record the close."""
        self.closed = True

    def abort(self) -> None:
        """Record the close; there is nothing unsent to drop."""
        self.closed = True
