"""A JSON answer whose status line, header fields and body go out as one write.

aiohttp's ``web.Response`` is general: header multidicts, cookies, compression, chunking,
a ``prepare`` chain that serializes and checks every field. The sidecar's answers need
none of it: their fields are few and made here from numbers and ids, so a :class:`Reply`
renders them straight into the bytes it writes, and costs a fraction of the time.

It keeps what clients see from ``web.Response`` the same: the status line in the request's
HTTP version, ``Content-Type``, ``Content-Length``, ``Date`` and ``Server``, and the
``Connection`` field aiohttp would add (``close`` when the connection will close,
``keep-alive`` for an HTTP/1.0 client that asked to keep it). It is for answers with a
body to a method other than HEAD (no route of the sidecar allows HEAD), errors included.
:meth:`Reply.render` gives the bytes without a request, for answers written straight to
the transport.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion, HttpVersion10, HttpVersion11
from multidict import CIMultiDict

if TYPE_CHECKING:
    from aiohttp.abc import AbstractStreamWriter
    from aiohttp.web_request import BaseRequest


class Reply(web.StreamResponse):
    """A JSON body with its status and fields, written whole when aiohttp sends it.

    ``fields`` are header lines rendered by the caller, each ending in CRLF; fields set
    through ``headers`` (the rate-limit fields) are sent after them.
    """

    def __init__(self, status: int, body: bytes, fields: str = "") -> None:
        # What StreamResponse.__init__ sets, without its checks and copies: a Reply is
        # made per request (tests/test_http_reply.py checks that the attributes match).
        self._state = {}
        self._headers = CIMultiDict()
        self._status = status
        self._reason = _REASONS.get(status) or HTTPStatus(status).phrase
        self.body = body
        self.fields = fields

    async def prepare(self, request: BaseRequest) -> AbstractStreamWriter | None:
        """Render and write the whole answer; aiohttp calls this, then write_eof."""
        if self._eof_sent:
            return None
        keep_alive = self._keep_alive
        if keep_alive is None:
            keep_alive = self._keep_alive = request.keep_alive
        data = self.render(request.version, keep_alive=keep_alive)
        writer = request.writer
        # Its own drain waits while the client is slow to read a large body.
        await writer.write(data)
        self._eof_sent = True  # so the write_eof aiohttp calls next has nothing to do
        return writer

    def render(self, version: HttpVersion, *, keep_alive: bool) -> bytes:
        """The whole answer as it goes out to a client speaking ``version``."""
        # The Connection field aiohttp adds: close (1.1) or keep-alive (1.0) when not
        # the version's default, none for other versions.
        if keep_alive:
            tail = "Connection: keep-alive\r\n\r\n" if version == HttpVersion10 else "\r\n"
        else:
            tail = "Connection: close\r\n\r\n" if version == HttpVersion11 else "\r\n"
        headers = self._headers
        extra = (
            "".join(f"{name}: {value}\r\n" for name, value in headers.items()) if headers else ""
        )
        body = self.body
        # Fields in web.Response's order, so the bytes are the ones it would send.
        head = (
            f"HTTP/{version[0]}.{version[1]} {self._status} {self._reason}\r\n{self.fields}"
            f"Content-Type: application/json\r\n{extra}Content-Length: {len(body)}\r\n"
            f"Date: {rfc822_formatted_time()}\r\nServer: {SERVER_SOFTWARE}\r\n{tail}"
        )
        return head.encode() + body


_REASONS: dict[int, str] = {200: "OK", 201: "Created"}
