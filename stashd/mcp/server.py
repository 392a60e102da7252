"""The MCP server: Stash's tools, and its memories as resources, on the SDK's low-level Server.

The low-level :class:`mcp.server.Server` is used rather than the decorator API because
what a caller sees depends on who calls: over HTTP each request carries its own key, so
the tools run, and the resources are listed, on the client of that request's caller
(``stash_of``), which the SDK's handlers are given with each request's context. Over
stdio it is one client for the process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, unquote

from mcp import MCPError
from mcp.server import Server
from mcp.types import (
    INVALID_PARAMS,
    CallToolResult,
    ListResourcesResult,
    ListResourceTemplatesResult,
    ListToolsResult,
    ReadResourceResult,
    Resource,
    ResourceTemplate,
    TextResourceContents,
)

from stashd._version import __version__
from stashd.errors import StashError
from stashd.http.errors import error_object
from stashd.jsontext import dump_json
from stashd.mcp.tools import MCP_WORDS, NOT_FOUND, TOOLS, call, when

if TYPE_CHECKING:
    from mcp.server import ServerRequestContext
    from mcp.types import CallToolRequestParams, PaginatedRequestParams, ReadResourceRequestParams

    from stashd.client import AsyncStash

#: The client a request's tools run on, from the request's context.
StashOf = Callable[["ServerRequestContext[Any, Any]"], "AsyncStash"]

#: A memory's resource URI: the scheme, then its id percent-encoded (ids are any key).
SCHEME: Final = "stash://"

INSTRUCTIONS: Final = (
    "Stash is working memory that always expires. Park JSON here (task state, "
    "intermediate results, context blocks) with stash, read it back with recall, change "
    "it with update (merge patches, compare-and-set with if_version), and keep what you "
    "still need alive with extend before its TTL runs out: anything not extended is "
    "deleted when its time is up. list shows what is kept and how long it has left; "
    "forget deletes now. Memories are also resources at stash://{memory_id}."
)


def uri_of(memory_id: str) -> str:
    """The resource URI of a memory."""
    return SCHEME + quote(memory_id, safe="")


def _refused(exc: StashError) -> MCPError:
    """A rule's refusal of a resource request, as the JSON-RPC error resources answer."""
    _, error = error_object(exc, MCP_WORDS)
    return MCPError(code=INVALID_PARAMS, message=error["message"], data=error)


def build(stash_of: StashOf) -> Server[Any]:
    """The server, with each request's tools and resources run on ``stash_of(context)``."""

    async def list_tools(
        ctx: ServerRequestContext[Any, Any], params: PaginatedRequestParams | None
    ) -> ListToolsResult:
        del ctx, params
        return ListToolsResult(tools=[row.tool for row in TOOLS.values()])

    async def call_tool(
        ctx: ServerRequestContext[Any, Any], params: CallToolRequestParams
    ) -> CallToolResult:
        return await call(stash_of(ctx), params.name, params.arguments)

    async def list_resources(
        ctx: ServerRequestContext[Any, Any], params: PaginatedRequestParams | None
    ) -> ListResourcesResult:
        cursor = params.cursor if params is not None else None
        try:
            page = await stash_of(ctx).memories(cursor=cursor)
        except StashError as exc:
            raise _refused(exc) from None
        except (TypeError, ValueError) as exc:
            raise MCPError(code=INVALID_PARAMS, message=str(exc)) from None
        resources = [
            Resource(
                uri=uri_of(m.id),
                name=m.id,
                description=f"expires at {when(m.expires_at)} "
                f"({m.ttl_remaining} s left), version {m.version}",
                mime_type="application/json",
                size=m.size,
            )
            for m in page.memories
        ]
        return ListResourcesResult(resources=resources, next_cursor=page.next_cursor)

    async def list_templates(
        ctx: ServerRequestContext[Any, Any], params: PaginatedRequestParams | None
    ) -> ListResourceTemplatesResult:
        del ctx, params
        template = ResourceTemplate(
            uri_template=SCHEME + "{memory_id}",
            name="memory",
            title="A memory by id",
            description="The JSON value of a memory (gone once it expires).",
            mime_type="application/json",
        )
        return ListResourceTemplatesResult(resource_templates=[template])

    async def read_resource(
        ctx: ServerRequestContext[Any, Any], params: ReadResourceRequestParams
    ) -> ReadResourceResult:
        uri = str(params.uri)
        if not uri.startswith(SCHEME) or len(uri) == len(SCHEME):
            raise MCPError(
                code=INVALID_PARAMS,
                message=f"a memory's URI is {SCHEME}{{memory_id}}",
                data={"uri": uri[:256]},
            )
        memory_id = unquote(uri[len(SCHEME) :])
        try:
            memory = await stash_of(ctx).recall(memory_id, with_meta=True)
        except StashError as exc:
            raise _refused(exc) from None
        if memory is None:
            raise MCPError(
                code=INVALID_PARAMS,
                message=f"memory {memory_id[:200]!r} {NOT_FOUND}",
                data={"uri": uri[:256]},
            )
        text = dump_json(memory.data).decode()
        contents = TextResourceContents(uri=uri, mime_type="application/json", text=text)
        return ReadResourceResult(contents=[contents])

    return Server(
        "stash",
        version=__version__,
        title="Stash",
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_list_resource_templates=list_templates,
        on_read_resource=read_resource,
    )


async def serve_stdio(stash: AsyncStash) -> None:
    """Serve MCP on this process's stdin and stdout until the client closes them."""
    from mcp import stdio_server  # noqa: PLC0415 - only the stdio door needs it

    server = build(lambda _ctx: stash)
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())
