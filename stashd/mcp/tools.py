"""The MCP tools: what each one takes, answers and tells an agent, run on a Stash client.

Each tool is a row of :data:`TOOLS`: its arguments as a pydantic model (the JSON schema
an agent sees, and the type check of what it sends), its answer as another (the output
schema its structured result is checked against), the annotations, and the call on an
:class:`~stashd.client.AsyncStash`. The client is the caller's (the daemon's service
for the caller's key, an embedded store, or a remote daemon), so every rule (namespace,
TTL default and maximum, payload limit, JSON validity, versions) is the service's and
is not repeated here; this module only turns a tool call into a client call and its
answer, or its refusal, into a tool result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from mcp.types import CallToolResult, TextContent, Tool, ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from stashd.errors import BadExtend, Conflict, DataAndMerge, EmptyUpdate, NotFound, StashError
from stashd.http.errors import error_object
from stashd.jsontext import dump_json, load_json
from stashd.service import PAGE_DEFAULT, PAGE_MAX, rfc3339

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from datetime import datetime

    from stashd.client import AsyncStash, MemoryInfo

#: Where an error's RESP text names RESP syntax, a tool's names its arguments.
MCP_WORDS: Final[dict[type[StashError], str]] = {
    EmptyUpdate: "update needs at least one of data, data_json, merge, merge_json or extra_seconds",
    DataAndMerge: "data and merge cannot be used together",
    BadExtend: "extra_seconds must be a positive number, got {requested}",
    Conflict: "version is {current}, if_version expected {expected}: nothing changed; "
    "recall the memory to see version {current}",
}

_TTL_TEXT: Final = (
    "Seconds to keep it (a whole number, at least 1). Omitted: the server's default TTL "
    "(3600 s unless configured). More than the server's maximum TTL is refused, and the "
    "error names that maximum."
)
_DATA_TEXT: Final = (
    "The value to keep: any JSON value (object, array, string, number, boolean, null), "
    "stored as given. Its compact JSON must fit the server's payload limit (1 MiB unless "
    "configured; the error names the limit and the size)."
)
_JSON_TEXT: Final = (
    "The same value as JSON text, for clients that can only send strings; it is parsed, "
    "and text that is not JSON is refused with the position of the mistake."
)


def _stamp(info: MemoryInfo) -> dict[str, Any]:
    return {
        "memory_id": info.id,
        "ttl_remaining": info.ttl_remaining,
        "expires_at": when(info.expires_at),
        "version": info.version,
    }


def when(at: datetime) -> str:
    """An expiry as every door writes it (RFC 3339 UTC to the second, service.rfc3339)."""
    return rfc3339(int(at.timestamp()) * 1000)


class _Args(BaseModel):
    """Arguments are checked strictly: a number sent as text is a wrong type, not a guess."""

    model_config = ConfigDict(extra="forbid", strict=True)


class StashArgs(_Args):
    """stash's arguments."""

    data: JsonValue = Field(default=None, description=_DATA_TEXT + " Give data or data_json.")
    data_json: str | None = Field(default=None, description=_JSON_TEXT)
    ttl: int | None = Field(default=None, description=_TTL_TEXT)


class RecallArgs(_Args):
    """recall's arguments."""

    memory_id: str = Field(description="The id stash returned (or any key of this namespace).")


class UpdateArgs(_Args):
    """update's arguments."""

    memory_id: str = Field(description="The id of the memory to change.")
    data: JsonValue = Field(default=None, description="A new value, replacing the old whole.")
    data_json: str | None = Field(default=None, description="data as JSON text.")
    merge: JsonValue = Field(
        default=None,
        description="A JSON merge patch (RFC 7396) applied to the stored object: members "
        "set to null are removed, others set; a patch that is not an object replaces the "
        "value. Not with data.",
    )
    merge_json: str | None = Field(default=None, description="merge as JSON text.")
    extra_seconds: int | None = Field(
        default=None,
        description="Seconds added to the time the memory has left (the total stays within "
        "the maximum TTL).",
    )
    if_version: int | None = Field(
        default=None,
        description="Change it only if its version is this one (compare-and-set); otherwise "
        "nothing changes and the error says the current version.",
    )


class ForgetArgs(_Args):
    """forget's arguments."""

    memory_ids: list[str] = Field(description="The ids to delete (one or more).", min_length=1)


class ListArgs(_Args):
    """list's arguments."""

    pattern: str = Field(
        default="*",
        description="A glob on ids/keys: * any characters, ? one, [abc] a set, \\ escapes.",
    )
    cursor: str | None = Field(
        default=None, description="The next_cursor of the previous page; omit for the first."
    )
    limit: int = Field(default=PAGE_DEFAULT, description=f"Memories per page, 1 to {PAGE_MAX}.")


class ExtendArgs(_Args):
    """extend's arguments."""

    memory_id: str = Field(description="The id of the memory to keep alive.")
    seconds: int = Field(
        description="Seconds added to the time it has left (the total stays within the "
        "maximum TTL). The value and its version are untouched."
    )


class Stamp(BaseModel):
    """What a write answers: the id, the time left, the expiry and the version."""

    memory_id: str
    ttl_remaining: int = Field(description="Whole seconds left.")
    expires_at: str = Field(description="When it expires, RFC 3339 UTC.")
    version: int = Field(description="1 when stored, one more on every change of the value.")


class Stashed(BaseModel):
    """stash's answer."""

    memory_id: str = Field(description="The new id: keep it to recall the memory.")
    ttl: int = Field(description="Seconds it will be kept unless extended.")
    expires_at: str = Field(description="When it expires, RFC 3339 UTC.")
    version: int = Field(description="1: the first version.")


class Recalled(BaseModel):
    """recall's answer: found, with the value and its metadata, or not found."""

    found: bool = Field(description="False when the id is unknown or the memory expired.")
    memory_id: str
    data: JsonValue = Field(default=None, description="The value (when found).")
    ttl_remaining: int | None = Field(default=None, description="Whole seconds left.")
    expires_at: str | None = Field(default=None, description="RFC 3339 UTC.")
    version: int | None = None
    message: str | None = Field(default=None, description="Why nothing was found.")


class Forgotten(BaseModel):
    """forget's answer."""

    forgotten: int = Field(description="How many of the ids existed and are now deleted.")


class Listed(BaseModel):
    """One memory of a listing."""

    memory_id: str
    ttl_remaining: int
    expires_at: str
    size: int | None = Field(description="Bytes stored.")
    version: int


class Page(BaseModel):
    """list's answer."""

    memories: list[Listed]
    next_cursor: str | None = Field(description="Pass it as cursor for more; null when done.")


def _value(args: _Args, name: str) -> tuple[bool, Any]:
    """Whether the value argument ``name`` (or its ``_json`` text form) was given, and it."""
    text_name = f"{name}_json"
    given = args.model_fields_set
    if name in given and text_name in given:
        raise InvalidArguments(f"give {name} or {text_name}, not both")
    if text_name in given:
        text = getattr(args, text_name)
        return True, load_json(text.encode("utf-8", "surrogatepass"), text_name)
    return name in given, getattr(args, name)


class InvalidArguments(ValueError):
    """Arguments a tool cannot take, said in the tool's words."""


async def _stash(s: AsyncStash, args: StashArgs) -> dict[str, Any]:
    given, data = _value(args, "data")
    if not given:
        raise InvalidArguments("data (or data_json) is required")
    info = await s.stash(data, ttl=args.ttl, with_meta=True)
    return {
        "memory_id": info.id,
        "ttl": info.ttl_remaining,
        "expires_at": when(info.expires_at),
        "version": info.version,
    }


NOT_FOUND: Final = "not found or expired"


async def _recall(s: AsyncStash, args: RecallArgs) -> dict[str, Any]:
    memory = await s.recall(args.memory_id, with_meta=True)
    if memory is None:
        return {"found": False, "memory_id": args.memory_id, "message": NOT_FOUND}
    return {
        "found": True,
        "memory_id": memory.id,
        "data": memory.data,
        "ttl_remaining": memory.ttl_remaining,
        "expires_at": when(memory.expires_at),
        "version": memory.version,
    }


async def _update(s: AsyncStash, args: UpdateArgs) -> dict[str, Any]:
    has_data, data = _value(args, "data")
    has_merge, merge = _value(args, "merge")
    changes: dict[str, Any] = {}
    if has_data:
        changes["data"] = data
    if has_merge:
        changes["merge"] = merge
    info = await s.update(
        args.memory_id,
        **changes,
        extra_seconds=args.extra_seconds,
        if_version=args.if_version,
        with_meta=True,
    )
    if info is None:
        raise NotFound
    return _stamp(info)


async def _forget(s: AsyncStash, args: ForgetArgs) -> dict[str, Any]:
    return {"forgotten": await s.forget(*args.memory_ids)}


async def _list(s: AsyncStash, args: ListArgs) -> dict[str, Any]:
    page = await s.memories(args.pattern, cursor=args.cursor, limit=args.limit)
    return {
        "memories": [{**_stamp(m), "size": m.size} for m in page.memories],
        "next_cursor": page.next_cursor,
    }


async def _extend(s: AsyncStash, args: ExtendArgs) -> dict[str, Any]:
    if args.seconds <= 0:
        raise InvalidArguments(f"seconds must be a positive number, got {args.seconds}")
    info = await s.update(args.memory_id, extra_seconds=args.seconds, with_meta=True)
    if info is None:
        raise NotFound
    return _stamp(info)


@dataclass(frozen=True, slots=True)
class ToolRow:
    """One tool: its definition as agents list it, and how a call runs."""

    tool: Tool
    args: type[_Args]
    run: Callable[[AsyncStash, Any], Awaitable[dict[str, Any]]]


def _row(
    name: str,
    title: str,
    description: str,
    *,
    args: type[_Args],
    answer: type[BaseModel],
    run: Callable[[AsyncStash, Any], Awaitable[dict[str, Any]]],
    read_only: bool = False,
    destructive: bool = False,
    idempotent: bool = False,
) -> ToolRow:
    annotations = ToolAnnotations(
        title=title,
        read_only_hint=read_only,
        # The hints below mean something only for a tool that writes (MCP spec).
        destructive_hint=None if read_only else destructive,
        idempotent_hint=idempotent,
        # Stash is a closed world: a tool touches this namespace's memories, nothing else.
        open_world_hint=False,
    )
    tool = Tool(
        name=name,
        title=title,
        description=description,
        input_schema=args.model_json_schema(),
        output_schema=answer.model_json_schema(),
        annotations=annotations,
    )
    return ToolRow(tool, args, run)


_EXPIRY: Final = (
    "Every memory expires: when its TTL runs out it is gone for good, unless it was "
    "extended (extend, or update with extra_seconds) before then."
)

TOOLS: Final[dict[str, ToolRow]] = {
    row.tool.name: row
    for row in (
        _row(
            "stash",
            "Stash a memory",
            "Keep a JSON value (task state, an intermediate result, a context block) under a "
            "new id for ttl seconds, and answer that id with its expiry. " + _EXPIRY,
            args=StashArgs,
            answer=Stashed,
            run=_stash,
        ),
        _row(
            "recall",
            "Recall a memory",
            "Read a memory by id: its value, whole seconds left, expiry and version. An "
            "unknown or expired id answers found=false (not an error). Reading does not "
            "extend it.",
            args=RecallArgs,
            answer=Recalled,
            run=_recall,
            read_only=True,
            idempotent=True,
        ),
        _row(
            "update",
            "Update a memory",
            "Change a memory: replace its value (data) or merge-patch it (merge, RFC 7396), "
            "and/or add extra_seconds to its time left. With if_version the change happens "
            "only at that version (compare-and-set); a conflict changes nothing and says the "
            "current version. Answers the time left, expiry and new version (a change of the "
            "value adds one; extending alone keeps it). An unknown or expired id is an error.",
            args=UpdateArgs,
            answer=Stamp,
            run=_update,
            destructive=True,
        ),
        _row(
            "forget",
            "Forget memories",
            "Delete memories by id now, instead of waiting for them to expire; answers how "
            "many existed. Forgetting an id that is already gone is not an error.",
            args=ForgetArgs,
            answer=Forgotten,
            run=_forget,
            destructive=True,
            idempotent=True,
        ),
        _row(
            "list",
            "List memories",
            "List this namespace's memories (ids or keys matching a glob pattern) a page at "
            "a time, with whole seconds left, expiry, size and version, without values. Pass "
            "next_cursor back as cursor until it is null. " + _EXPIRY,
            args=ListArgs,
            answer=Page,
            run=_list,
            read_only=True,
            idempotent=True,
        ),
        _row(
            "extend",
            "Keep a memory alive",
            "Add seconds to the time a memory has left, so it does not expire yet; the value "
            "and version stay. The total is capped by the server's maximum TTL (more is "
            "refused, naming the maximum). An unknown or expired id is an error.",
            args=ExtendArgs,
            answer=Stamp,
            run=_extend,
        ),
    )
}


def tool_error(message: str, fields: dict[str, Any] | None = None) -> CallToolResult:
    """A refused call: the message for the agent, and the error's fields as structure."""
    error = {"code": "invalid_arguments", "message": message} if fields is None else fields
    return CallToolResult(
        content=[TextContent(type="text", text=message)],
        structured_content={"error": error},
        is_error=True,
    )


def _wrong(exc: ValidationError) -> str:
    """Pydantic's complaints, one per argument: the argument, what is wrong, what came."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        if err["type"] == "missing":
            parts.append(f"{where} is required")
            continue
        got = err.get("input")
        shown = type(got).__name__ if isinstance(got, dict | list) else repr(got)[:80]
        parts.append(f"{where}: {err['msg'].lower()}, got {shown}")
    return "; ".join(parts)


async def call(s: AsyncStash, name: str, arguments: dict[str, Any] | None) -> CallToolResult:
    """Run tool ``name``; a refusal by the rules is a tool error naming the limit and value."""
    row = TOOLS.get(name)
    if row is None:
        return tool_error(f"unknown tool {name[:64]!r}; the tools are {', '.join(TOOLS)}")
    try:
        args = row.args.model_validate(arguments or {})
    except ValidationError as exc:
        return tool_error(_wrong(exc))
    try:
        answer = await row.run(s, args)
    except NotFound:
        return tool_error(
            f"memory {getattr(args, 'memory_id', '')[:200]!r} {NOT_FOUND}; nothing changed",
            {"code": "not_found", "message": NOT_FOUND},
        )
    except StashError as exc:
        _, error = error_object(exc, MCP_WORDS)
        return tool_error(error["message"], error)
    except (TypeError, ValueError) as exc:
        # The client's own checks (a TTL no server could take, a value JSON cannot hold).
        return tool_error(str(exc))
    return CallToolResult(
        content=[TextContent(type="text", text=dump_json(answer).decode())],
        structured_content=answer,
    )
