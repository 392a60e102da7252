"""``stash mcp``: the MCP server on stdin and stdout, for an agent that starts it as a tool.

It serves the tools of :mod:`stashd.mcp` on an :class:`~stashd.client.AsyncStash`
chosen as the data commands choose theirs: the SQLite file in this process (the file
``Stash()`` and the daemon use by default), or a running stashd with --url / --api-key
(STASH_URL, STASH_API_KEY), whose namespace is the key's.
"""

from __future__ import annotations

import asyncio
from typing import Any

import click

from stashd import log
from stashd.cli_data import reported, target, target_options


@click.command(name="mcp")
@target_options
def mcp(*, db: str | None, url: str | None, api_key: str | None) -> None:
    """Serve Stash to an agent over MCP (stdio): tools stash, recall, update, forget, list, extend.

    Nothing but MCP is written on stdout; the server runs until the client closes stdin.

    In a client's configuration:

    \b
    Example:
      {"command": "stash", "args": ["mcp"]}
      {"command": "stash", "args": ["mcp", "--url", "redis://127.0.0.1:6380"],
       "env": {"STASH_API_KEY": "..."}}
    """
    # stdout carries the protocol: any event logged goes to stderr.
    log.configure("warning")
    with reported():
        asyncio.run(_serve(target(db, url, api_key)))


async def _serve(args: dict[str, Any]) -> None:
    # The SDK and the server load only for this command: the others start faster.
    from stashd.client import AsyncStash  # noqa: PLC0415
    from stashd.mcp.server import serve_stdio  # noqa: PLC0415

    async with AsyncStash(**args) as stash:
        await serve_stdio(stash)


COMMANDS = (mcp,)
