"""How the HTTP door's answers are built: JSON bodies as responses, and whole closing answers."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Final

from aiohttp import web

# Built once: json.dumps with options builds an encoder per call.
ENCODE: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def response(status: int, body: bytes, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON body as a response."""
    return web.Response(status=status, body=body, headers=headers, content_type="application/json")


def json_response(
    status: int, payload: object, headers: dict[str, str] | None = None
) -> web.Response:
    """A payload encoded as compact JSON, as a response."""
    return response(status, ENCODE(payload).encode(), headers)


def closing_answer(status: int, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    """A whole answer written by the connection itself, after which it closes."""
    fields = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{fields}Connection: close\r\n\r\n"
    )
    return head.encode() + body
