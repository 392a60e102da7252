"""The http suite's anchor: a bare aiohttp application answering with fixed JSON bodies.

It does what any aiohttp service does at least (route, read the body, send JSON) and
nothing else, under uvloop like stashd, so the ratio shows what stashd's own work costs.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import uvloop
from aiohttp import web


def make_app(recall_body: bytes, created_body: bytes) -> web.Application:
    """GET /recall/{id} and POST /stash, each returning its fixed body."""

    async def recall(_request: web.Request) -> web.Response:
        return web.Response(body=recall_body, content_type="application/json")

    async def stash(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=201, body=created_body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/recall/{memory_id}", recall)
    app.router.add_post("/stash", stash)
    return app


async def serve(port: int, recall_body: bytes, created_body: bytes) -> None:
    """Serve until killed."""
    runner = web.AppRunner(make_app(recall_body, created_body), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


def main() -> None:
    """``bare_http.py --port N --recall FILE --created FILE``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--recall", type=Path, required=True)
    parser.add_argument("--created", type=Path, required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.recall.read_bytes(), args.created.read_bytes()))


if __name__ == "__main__":
    main()
