"""The MCP door as agents use it: the SDK's own client over stdio and streamable HTTP, every backend."""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
import redis
from mcp import ClientSession, MCPError, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from stashd.registry import SQLiteRegistry
from tests.support.http import sidecar, split_response
from tests.support.servers import RedisServer, StashDaemon
from tests.test_strict import _key

TOOLS = {"stash", "recall", "update", "forget", "list", "extend"}
#: The daemons' payload limit: small, so a test can go past it.
PAYLOAD = 4096


@pytest.fixture(scope="module")
def redis_for_mcp() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module", params=["memory", "sqlite", "redis"])
def daemon(request: pytest.FixtureRequest) -> Iterator[StashDaemon]:
    """A daemon per backend, with a payload limit a test can exceed."""
    where: list[str] = ["--backend", request.param]
    if request.param == "redis":
        where += ["--redis-url", request.getfixturevalue("redis_for_mcp").url]
    with StashDaemon(*where, "--max-payload-bytes", str(PAYLOAD), mcp=True) as d:
        yield d


@asynccontextmanager
async def over_http(daemon: StashDaemon, key: str | None = None) -> AsyncIterator[ClientSession]:
    headers = {} if key is None else {"X-API-KEY": key}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        streamable_http_client(f"{daemon.http_url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def _stdio_params(*args: str, env: dict[str, str] | None = None) -> StdioServerParameters:
    # The package's console script, as an agent's configuration names it ("stash mcp").
    stash = str(Path(sys.executable).with_name("stash"))
    return StdioServerParameters(command=stash, args=["mcp", *args], env=env or {})


@asynccontextmanager
async def over_stdio(*args: str, env: dict[str, str] | None = None) -> AsyncIterator[ClientSession]:
    async with (
        stdio_client(_stdio_params(*args, env=env)) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def structured(session: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    """A tool's structured answer; the call must succeed."""
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    return result.structured_content


async def refused(session: ClientSession, tool: str, **arguments: Any) -> str:
    """A tool error's text; the call must be refused."""
    result = await session.call_tool(tool, arguments)
    assert result.is_error, result.structured_content
    text = result.content[0]
    assert text.type == "text"
    return str(text.text)


async def check_tools(session: ClientSession) -> None:
    """Every tool is listed with a schema for what it takes and answers, and its annotations."""
    tools = {t.name: t for t in (await session.list_tools()).tools}
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert tool.description
        assert len(tool.description) > 60  # enough for an LLM to act on
        assert tool.input_schema["type"] == "object"
        assert tool.output_schema is not None
        assert tool.output_schema["type"] == "object"
        assert tool.annotations is not None
        assert tool.annotations.open_world_hint is False
    for name in ("recall", "list"):
        assert tools[name].annotations.read_only_hint is True
        assert tools[name].annotations.idempotent_hint is True
    assert tools["forget"].annotations.destructive_hint is True
    assert tools["forget"].annotations.idempotent_hint is True
    assert tools["stash"].annotations.read_only_hint is False
    assert tools["stash"].annotations.destructive_hint is False
    assert "seconds" in tools["stash"].input_schema["properties"]["ttl"]["description"].lower()
    assert set(tools["update"].input_schema["properties"]) >= {
        "memory_id",
        "data",
        "merge",
        "extra_seconds",
        "if_version",
    }
    assert tools["stash"].output_schema is not None
    assert tools["stash"].output_schema["required"] == ["memory_id", "ttl", "expires_at", "version"]


async def walk(session: ClientSession) -> str:
    """stash -> recall -> update (merge, a version conflict) -> list -> extend -> forget."""
    stashed = await structured(session, "stash", data={"task": "summarize"}, ttl=600)
    memory_id: str = stashed["memory_id"]
    assert stashed["version"] == 1
    assert 599 <= stashed["ttl"] <= 600
    assert stashed["expires_at"].endswith("Z")

    recalled = await structured(session, "recall", memory_id=memory_id)
    assert recalled["found"] is True
    assert recalled["data"] == {"task": "summarize"}
    assert recalled["version"] == 1

    merged = await structured(
        session, "update", memory_id=memory_id, merge={"progress": 0.5}, if_version=1
    )
    assert merged["version"] == 2
    conflict = await refused(session, "update", memory_id=memory_id, data={"x": 1}, if_version=1)
    assert "version is 2" in conflict
    assert (await structured(session, "recall", memory_id=memory_id))["data"] == {
        "task": "summarize",
        "progress": 0.5,
    }

    listed = await structured(session, "list", pattern=memory_id[:3] + "*")
    mine = [m for m in listed["memories"] if m["memory_id"] == memory_id]
    assert len(mine) == 1
    assert mine[0]["version"] == 2
    assert 0 < mine[0]["ttl_remaining"] <= 600

    extended = await structured(session, "extend", memory_id=memory_id, seconds=300)
    assert extended["ttl_remaining"] > 600
    assert extended["version"] == 2

    # The memory is a resource too, listed and readable as JSON.
    resources = (await session.list_resources()).resources
    uri = f"stash://{memory_id}"
    assert uri in {str(r.uri) for r in resources}
    read = await session.read_resource(uri)
    assert json.loads(read.contents[0].text) == {"task": "summarize", "progress": 0.5}

    assert (await structured(session, "forget", memory_ids=[memory_id, "nosuch"])) == {
        "forgotten": 1
    }
    gone = await structured(session, "recall", memory_id=memory_id)
    assert gone["found"] is False
    assert "not found or expired" in gone["message"]
    with pytest.raises(MCPError, match="not found or expired"):
        await session.read_resource(uri)
    return memory_id


async def bad_input(session: ClientSession) -> None:
    """Each refusal names the limit and the value, and changes nothing."""
    before = await structured(session, "list", limit=1000)
    over_ttl = await refused(session, "stash", data=1, ttl=10**6)
    assert "1000000 seconds exceeds the maximum of 86400 seconds" in over_ttl
    too_big = await refused(session, "stash", data="x" * PAYLOAD)
    assert f"the limit is {PAYLOAD} bytes" in too_big
    assert f"value is {PAYLOAD + 2} bytes" in too_big
    wrong_type = await refused(session, "stash", data=1, ttl="60")
    assert "ttl" in wrong_type
    assert "'60'" in wrong_type
    not_json = await refused(session, "stash", data_json='{"a": ')
    assert "data_json is not valid JSON" in not_json
    assert "line 1 column 7" in not_json
    unknown = await refused(session, "stash", data=1, extend=5)
    assert "extend" in unknown
    missing = await refused(session, "stash", ttl=5)
    assert "data" in missing
    extend_zero = await refused(session, "extend", memory_id="nosuch", seconds=0)
    assert "got 0" in extend_zero
    not_there = await refused(session, "update", memory_id="nosuch", merge={"a": 1})
    assert "not found or expired" in not_there
    bad_limit = await refused(session, "list", limit=5000)
    assert "5000" in bad_limit
    assert "1000" in bad_limit
    after = await structured(session, "list", limit=1000)
    assert after["memories"] == before["memories"]


async def test_http_on_every_backend(daemon: StashDaemon) -> None:
    """The streamable HTTP endpoint lists the tools and runs the whole walk."""
    async with over_http(daemon, "http-walker") as session:
        await check_tools(session)
        await walk(session)
        await bad_input(session)


async def test_stdio_in_front_of_a_daemon(daemon: StashDaemon) -> None:
    """``stash mcp --url``: the same tools and answers, through the daemon's RESP door."""
    url = f"redis://127.0.0.1:{daemon.port}"
    async with over_stdio("--url", url, env={"STASH_API_KEY": "stdio-walker"}) as session:
        await check_tools(session)
        await walk(session)
        await bad_input(session)


async def test_stdio_embedded_uses_the_sqlite_file(tmp_path: Path) -> None:
    """``stash mcp`` with no daemon keeps memories in the SQLite file, as Stash() does."""
    db = tmp_path / "agent.db"
    env = {"STASH_MAX_PAYLOAD_BYTES": str(PAYLOAD)}
    async with over_stdio("--db", str(db), env=env) as session:
        await check_tools(session)
        await walk(session)
        await bad_input(session)
        kept = await structured(session, "stash", data={"plan": [1, 2]})
    # A later server (another agent run) on the same file finds it.
    async with over_stdio("--db", str(db)) as session:
        again = await structured(session, "recall", memory_id=kept["memory_id"])
        assert again["data"] == {"plan": [1, 2]}


async def test_two_keys_see_only_their_own(daemon: StashDaemon) -> None:
    """Two keys are two namespaces through MCP, and MCP and RESP agree on which is which."""
    async with over_http(daemon, "alice-key") as alice, over_http(daemon, "bob-key") as bob:
        mine = (await structured(alice, "stash", data={"owner": "alice"}))["memory_id"]
        assert (await structured(bob, "recall", memory_id=mine))["found"] is False
        listed = await structured(bob, "list")
        assert mine not in {m["memory_id"] for m in listed["memories"]}
        assert (await structured(bob, "forget", memory_ids=[mine])) == {"forgotten": 0}
        assert await refused(bob, "update", memory_id=mine, data=1)
        assert mine not in {str(r.uri) for r in (await bob.list_resources()).resources}
        # Over RESP, alice's key reads what alice stashed over MCP, bob's does not.
        for key, expected in (("alice-key", b'{"owner":"alice"}'), ("bob-key", None)):
            client = redis.Redis(port=daemon.port, password=key)
            try:
                assert client.execute_command("RECALL", mine) == expected
            finally:
                client.close()
        # And what RESP stashes under alice's key, alice's MCP session recalls.
        client = redis.Redis(port=daemon.port, password="alice-key")
        try:
            from_resp = client.execute_command("STASH", '{"via":"resp"}').decode()
        finally:
            client.close()
        recalled = await structured(alice, "recall", memory_id=from_resp)
        assert recalled["data"] == {"via": "resp"}
        assert (await structured(bob, "recall", memory_id=from_resp))["found"] is False
    # No key is the default namespace, the one a RESP client that never authenticates uses.
    async with over_http(daemon) as anonymous:
        open_id = (await structured(anonymous, "stash", data="open"))["memory_id"]
    plain = redis.Redis(port=daemon.port)
    try:
        assert plain.execute_command("RECALL", open_id) == b'"open"'
        assert plain.execute_command("RECALL", mine) is None
    finally:
        plain.close()


def _post_mcp(daemon: StashDaemon, key: str | None) -> tuple[int, dict[str, str]]:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "probe", "version": "0"},
        },
    }
    request = urllib.request.Request(  # noqa: S310 - loopback test server
        f"{daemon.http_url}/mcp",
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        },
    )
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


@pytest.fixture(scope="module")
def strict_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mcpstrict") / "stash.db"
    SQLiteRegistry(path).close()
    return path


async def test_strict_mode_refuses_before_any_session(strict_db: Path) -> None:
    """A missing or unknown key is a 401 at the door; a registered one gets its namespace."""
    secret, _, _ = _key(strict_db, "pro")
    with StashDaemon(
        "--auth", "keys", "--db", str(strict_db), "--backend", "memory", mcp=True
    ) as daemon:
        for key in (None, "not-a-registered-key"):
            status, headers = _post_mcp(daemon, key)
            assert status == 401
            assert "mcp-session-id" not in {k.lower() for k in headers}
        status, _ = _post_mcp(daemon, secret)
        assert status == 200
        async with over_http(daemon, secret) as session:
            stashed = await structured(session, "stash", data={"tier": "pro"})
            client = redis.Redis(port=daemon.port, password=secret)
            try:
                assert client.execute_command("RECALL", stashed["memory_id"]) == b'{"tier":"pro"}'
            finally:
                client.close()


def test_an_mcp_body_over_the_limit_is_refused_unread(daemon: StashDaemon) -> None:
    """/mcp bodies are bounded by the caller's payload limit, as every HTTP body is."""
    request = urllib.request.Request(  # noqa: S310 - loopback test server
        f"{daemon.http_url}/mcp",
        data=b"[" + b" " * (3 * PAYLOAD + 128 * 1024) + b"]",
        method="POST",
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)  # noqa: S310
    assert caught.value.code == 413


def _rpc(daemon: StashDaemon, method: str, params: dict[str, Any], key: str) -> httpx2.Response:
    """One JSON-RPC request on its own, as a stateless client sends it: no session id."""
    body = {"jsonrpc": "2.0", "id": 7, "method": method, "params": params}
    headers = {
        "X-API-KEY": key,
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2025-06-18",
    }
    return httpx2.post(f"{daemon.http_url}/mcp", json=body, headers=headers, timeout=10)


def test_stateless_requests_need_no_session(daemon: StashDaemon) -> None:
    """Each POST is a whole exchange: no session id is issued or needed, GET is refused."""
    init = _rpc(
        daemon,
        "initialize",
        {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"},
        },
        "stateless",
    )
    assert init.status_code == 200
    assert "mcp-session-id" not in init.headers
    assert init.json()["result"]["serverInfo"]["name"] == "stash"
    # A tool call with no initialize before it, on a fresh connection, is answered.
    call = _rpc(daemon, "tools/call", {"name": "stash", "arguments": {"data": [1]}}, "stateless")
    assert call.status_code == 200
    answer = call.json()["result"]
    assert answer["isError"] is False
    memory_id = answer["structuredContent"]["memory_id"]
    again = _rpc(
        daemon, "tools/call", {"name": "recall", "arguments": {"memory_id": memory_id}}, "stateless"
    )
    assert again.json()["result"]["structuredContent"]["data"] == [1]
    stream = httpx2.get(
        f"{daemon.http_url}/mcp",
        headers={"X-API-KEY": "stateless", "Accept": "text/event-stream"},
        timeout=10,
    )
    assert stream.status_code == 405
    assert stream.headers["Allow"] == "POST"
    end = httpx2.delete(f"{daemon.http_url}/mcp", headers={"X-API-KEY": "stateless"}, timeout=10)
    assert end.status_code == 405


def test_the_rate_limit_covers_mcp() -> None:
    """Over HTTP a request past the caller's rate is the door's 429, before MCP runs it."""
    with StashDaemon(
        "--backend", "memory", "--rate-limit", "3/min", "--rate-burst", "3", mcp=True
    ) as daemon:
        statuses = [
            _rpc(daemon, "tools/call", {"name": "stash", "arguments": {"data": n}}, "limited")
            for n in range(4)
        ]
        assert [r.status_code for r in statuses] == [200, 200, 200, 429]
        refused = statuses[-1]
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.json()["error"]["code"] == "rate_limited"


async def test_a_tier_s_limits_apply_over_mcp(strict_db: Path) -> None:
    """A free key's TTL cap is its tier's, named in the tool error."""
    free, _, _ = _key(strict_db, "free")
    with StashDaemon(
        "--auth", "keys", "--db", str(strict_db), "--backend", "memory", mcp=True
    ) as daemon:
        async with over_http(daemon, free) as session:
            text = await refused(session, "stash", data=1, ttl=10**6)
            assert "exceeds the maximum of" in text
            listed = await structured(session, "list")
            assert listed["memories"] == []


def test_a_page_that_rebinds_its_name_to_loopback_is_refused(daemon: StashDaemon) -> None:
    """On a loopback daemon, a Host or an Origin that is not loopback's does not reach MCP."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2025-06-18",
    }
    url = f"{daemon.http_url}/mcp"
    cases: tuple[tuple[dict[str, str], int], ...] = (
        ({}, 200),
        ({"Host": "evil.example"}, 421),
        ({"Origin": "http://evil.example"}, 403),
    )
    for extra, status in cases:
        answer = httpx2.post(url, json=body, headers={**headers, **extra}, timeout=10)
        assert answer.status_code == status, extra
    local = httpx2.post(url, json=body, headers={**headers, "Origin": "http://localhost:3000"})
    assert local.status_code == 200


async def test_a_stalled_mcp_body_is_refused_at_the_request_deadline() -> None:
    """The HTTP door's deadline covers /mcp: a body that stops short is refused, nothing runs."""
    async with sidecar(request_timeout=1.0, mcp=True) as s:
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
        writer.write(
            b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Accept: application/json, text/event-stream\r\nContent-Length: 200\r\n\r\n"
            b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "st'
        )
        status, _, body = split_response(await asyncio.wait_for(reader.read(), 10))
        assert status == 400  # at the deadline, as for any body short of its Content-Length
        assert json.loads(body)["error"]["code"] == "incomplete_body"
        writer.close()
        assert s.count("") == 0
