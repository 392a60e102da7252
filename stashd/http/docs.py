"""The HTTP door's own documents: its OpenAPI contract, and an index at / that links it.

The contract is ``openapi.yaml`` beside this module, so a wheel and a checkout serve the
same file. Both documents are public, as ``/healthz`` is: no key, no rate limit, nothing
of any namespace in them.
"""

from __future__ import annotations

import html
from functools import cache
from importlib import resources
from typing import Final

from aiohttp import web

from stashd._version import __version__
from stashd.http.answer import json_response

#: The paths the index lists, with what each is for: one table for both of its forms.
ENDPOINTS: Final = (
    ("POST", "/stash", "store a JSON value under a new id, with a TTL"),
    ("GET", "/stash", "list this namespace's memories, a page at a time"),
    ("GET", "/recall/{memory_id}", "read a memory and its time left"),
    ("PATCH", "/update/{memory_id}", "replace, merge into or extend a memory"),
    ("DELETE", "/forget/{memory_id}", "delete a memory"),
    ("POST", "/lease/{key}", "claim a lease for an owner; its fencing token"),
    ("PATCH", "/lease/{key}", "renew the owner's lease"),
    ("DELETE", "/lease/{key}", "release the owner's lease"),
    ("GET", "/lease/{key}", "a lease's owner, token and time left"),
    ("GET", "/watch", "this namespace's key events as Server-Sent Events, resumable"),
    ("GET", "/healthz", "whether the store answers; no key needed"),
    ("GET", "/openapi.yaml", "the whole contract, OpenAPI 3.1"),
)


@cache
def openapi_document() -> bytes:
    """The OpenAPI document, read once from the package."""
    return resources.files(__package__ or "stashd.http").joinpath("openapi.yaml").read_bytes()


def openapi() -> web.Response:
    """GET /openapi.yaml: the contract, as YAML."""
    return web.Response(status=200, body=openapi_document(), content_type="application/yaml")


def index(accept: str) -> web.Response:
    """GET /: what this server is and where its contract is; HTML for a browser, else JSON."""
    if "text/html" in accept:
        return web.Response(status=200, text=_index_page(), content_type="text/html")
    return json_response(
        200,
        {
            "name": "stash",
            "version": __version__,
            "openapi": "/openapi.yaml",
            "endpoints": [
                {"method": method, "path": path, "summary": summary}
                for method, path, summary in ENDPOINTS
            ],
        },
    )


@cache
def _index_page() -> str:
    rows = "\n".join(
        f"<tr><td>{method}</td><td><code>{html.escape(path)}</code></td>"
        f"<td>{html.escape(summary)}</td></tr>"
        for method, path, summary in ENDPOINTS
    )
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>Stash {__version__}</title></head><body>\n"
        f"<h1>Stash {__version__}</h1>\n"
        "<p>Working memory for AI agents: JSON that always expires. The key goes in "
        "<code>X-API-KEY</code> or <code>Authorization: Bearer</code>. "
        '<a href="/openapi.yaml">The OpenAPI document</a> has every endpoint, '
        "field and error.</p>\n"
        f"<table>\n<tr><th>method</th><th>path</th><th>what</th></tr>\n{rows}\n</table>\n"
        "</body></html>\n"
    )
