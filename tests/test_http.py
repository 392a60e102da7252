"""The HTTP API with a real aiohttp client: endpoints, rules shared with RESP, auth, rate limits."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
import yaml
from yarl import URL

from stashd import errors
from stashd._version import __version__
from stashd.events import WriteEvents
from stashd.http.api import HttpApi
from stashd.http.errors import INTERNAL_ERROR, error_body, error_row
from stashd.http.protocol import REQUEST_TIMEOUT, WATCH_INTERVAL
from stashd.http.request import if_match_version
from stashd.http.server import IDLE_TIMEOUT
from stashd.jsontext import MAX_DEPTH
from stashd.ops import Set
from stashd.ratelimit import LocalLimiter, Rate
from stashd.service import rfc3339
from stashd.store.memory import MemoryStore
from stashd.store.sqlite import SQLiteStore
from stashd.tenancy import OpenKeyring, namespace_of
from stashd.types import Limits, Principal
from tests.support.http import (
    START_MS,
    Sidecar,
    StrictKeyring,
    exchange,
    post,
    raw_exchange,
    sidecar,
    split_response,
)
from tests.support.servers import StashDaemon

BASE62_ID = re.compile(r"^[0-9A-Za-z]{8}$")
KEY = {"X-API-KEY": "alice-key"}
ALICE = namespace_of(b"alice-key")


async def _stash(s: Sidecar, data: Any, ttl: int | None = None, headers: Any = None) -> str:  # noqa: ANN401
    body: dict[str, Any] = {"data": data}
    if ttl is not None:
        body["ttl"] = ttl
    async with s.session.post("/stash", json=body, headers=headers or KEY) as resp:
        assert resp.status == 201, await resp.text()
        return str((await resp.json())["memory_id"])


async def test_stash_recall_update_forget_round_trip() -> None:
    """The README's curl session: create, read, replace, extend, both at once, delete."""
    async with sidecar() as s:
        async with s.session.post(
            "/stash",
            json={"data": {"task": "summarize", "context": "..."}, "ttl": 3600},
            headers=KEY,
        ) as resp:
            assert resp.status == 201
            created = await resp.json()
            assert resp.headers["ETag"] == '"1"'
            assert resp.headers["Content-Type"] == "application/json"
        mid = created["memory_id"]
        assert BASE62_ID.match(mid)
        assert created == {
            "memory_id": mid,
            "ttl": 3600,
            "expires_at": rfc3339(START_MS + 3_600_000),
        }
        s.clock.now += 1000
        async with s.session.get(f"/recall/{mid}", headers=KEY) as resp:
            assert resp.status == 200
            assert resp.headers["ETag"] == '"1"'
            assert await resp.json() == {
                "memory_id": mid,
                "data": {"task": "summarize", "context": "..."},
                "ttl_remaining": 3599,
                "expires_at": created["expires_at"],
                "version": 1,
            }
        # curl -d sends application/x-www-form-urlencoded: the body is JSON all the same.
        form = {"Content-Type": "application/x-www-form-urlencoded", **KEY}
        patch = json.dumps({"data": {"task": "summarize", "progress": 0.75}})
        async with s.session.patch(f"/update/{mid}", data=patch, headers=form) as resp:
            assert resp.status == 200
            assert (await resp.json())["version"] == 2
        async with s.session.patch(
            f"/update/{mid}", json={"extra_seconds": 1800}, headers=KEY
        ) as resp:
            body = await resp.json()
            assert body["ttl_remaining"] == 3599 + 1800
            assert body["version"] == 2
        s.clock.now += 3_954_000  # 1445 s left: 3600 more make the 5045
        async with s.session.patch(
            f"/update/{mid}", json={"data": {"a": 1}, "extra_seconds": 3600}, headers=KEY
        ) as resp:
            assert resp.status == 200
            body = await resp.json()
            assert body == {
                "memory_id": mid,
                "ttl_remaining": 5045,
                "expires_at": rfc3339(START_MS + 3_600_000 + 1_800_000 + 3_600_000),
                "version": 3,
            }
            assert resp.headers["ETag"] == '"3"'
        async with s.session.delete(f"/forget/{mid}", headers=KEY) as resp:
            assert resp.status == 204
        async with s.session.get(f"/recall/{mid}", headers=KEY) as resp:
            assert resp.status == 404
        async with s.session.delete(f"/forget/{mid}", headers=KEY) as resp:
            assert resp.status == 404


async def test_default_ttl_and_bounds_name_the_limits() -> None:
    """No ttl means the default; 0, negative and over-maximum TTLs get 422 with both bounds."""
    async with sidecar() as s:
        async with s.session.post("/stash", json={"data": 1}, headers=KEY) as resp:
            assert (await resp.json())["ttl"] == 3600
        for ttl, message in [
            (0, "ttl must be between 1 and 86400 seconds, got 0"),
            (-5, "ttl must be between 1 and 86400 seconds, got -5"),
            (86401, "ttl 86401 seconds exceeds the maximum of 86400 seconds"),
            (2**63 - 1, f"ttl {2**63 - 1} seconds exceeds the maximum of 86400 seconds"),
        ]:
            async with s.session.post("/stash", json={"data": 1, "ttl": ttl}, headers=KEY) as resp:
                assert resp.status == 422
                assert (await resp.json())["error"] == {
                    "code": "invalid_ttl",
                    "message": message,
                    "requested": ttl,
                    "minimum": 1,
                    "maximum": 86400,
                }
        for huge in [2**63, 10**30, 1e308, -1e308]:
            # Past any TTL: refused without echoing hundreds of digits.
            async with s.session.post("/stash", json={"data": 1, "ttl": huge}, headers=KEY) as resp:
                assert resp.status == 422
                assert (await resp.json())["error"] == {
                    "code": "invalid_request",
                    "message": "ttl must be an integer number of seconds within a signed "
                    "64-bit number",
                    "field": "ttl",
                }
        for wrong in ["60", 1.5, True, None]:
            async with s.session.post(
                "/stash", json={"data": 1, "ttl": wrong}, headers=KEY
            ) as resp:
                assert resp.status == 422
                assert (await resp.json())["error"]["field"] == "ttl"
        async with s.session.post("/stash", json={"data": 1, "ttl": 60.0}, headers=KEY) as resp:
            assert (await resp.json())["ttl"] == 60
        assert s.count("default") == 0
        assert s.count(ALICE) == 2


async def test_any_json_value_is_data_and_nothing_else_is() -> None:
    """data may be any JSON value, null included; bodies that are not objects are refused."""
    async with sidecar() as s:
        for value in [None, [1, "two"], "text", 3.25, False, {"deep": {"er": [None]}}]:
            mid = await _stash(s, value)
            async with s.session.get(f"/recall/{mid}", headers=KEY) as resp:
                assert (await resp.json())["data"] == value
            async with s.session.patch(f"/update/{mid}", json={"data": value}, headers=KEY) as r:
                assert r.status == 200
        for body, status, code in [
            (b"[1, 2]", 422, "invalid_request"),
            (b'"data"', 422, "invalid_request"),
            (b"{}", 422, "invalid_request"),
            (b'{"data": 1, "extra": 2}', 422, "invalid_request"),
            (b'{"data": NaN}', 400, "invalid_json"),
            (b'{"data": 1e400}', 400, "invalid_json"),
            (b"\xff\xfe{", 400, "invalid_json"),
            (b"", 400, "invalid_json"),
        ]:
            async with s.session.post("/stash", data=body, headers=KEY) as resp:
                assert resp.status == status, body
                assert (await resp.json())["error"]["code"] == code


async def test_malformed_json_reports_the_position_and_never_the_input() -> None:
    """400 with line, column and character offset; the request's bytes are not echoed."""
    async with sidecar() as s:
        secret = "sk-do-not-echo-" + uuid.uuid4().hex
        body = '{"data": {"token": "' + secret + '",\n  oops}}'
        async with s.session.post("/stash", data=body, headers=KEY) as resp:
            assert resp.status == 400
            text = await resp.text()
            assert secret not in text
            err = json.loads(text)["error"]
            assert err["code"] == "invalid_json"
            assert (err["line"], err["column"]) == (2, 3)
            assert err["position"] == body.index("oops")
            assert "line 2 column 3" in err["message"]
        async with s.session.post("/stash", json={"data": 1, secret: 2}, headers=KEY) as resp:
            assert resp.status == 422
            assert secret not in await resp.text()


async def test_patch_rules_match_resp() -> None:
    """PATCH needs data, merge or extra_seconds; data and merge exclude each other; all 422."""
    async with sidecar() as s:
        mid = await _stash(s, {"a": 1})
        for body, message in [
            ({}, "PATCH needs at least one of data, merge or extra_seconds"),
            ({"data": 1, "merge": {}}, "data and merge cannot be used together"),
            ({"extra_seconds": 0}, "extra_seconds must be a positive number, got 0"),
            ({"extra_seconds": -3}, "extra_seconds must be a positive number, got -3"),
        ]:
            async with s.session.patch(f"/update/{mid}", json=body, headers=KEY) as resp:
                assert resp.status == 422
                assert (await resp.json())["error"]["message"] == message
        async with s.session.patch(
            f"/update/{mid}", json={"extra_seconds": 86400}, headers=KEY
        ) as resp:
            assert resp.status == 422
            err = (await resp.json())["error"]
            assert err["code"] == "invalid_ttl"
            assert err["maximum"] == 86400
        async with s.session.get(f"/recall/{mid}", headers=KEY) as resp:
            body = await resp.json()
            assert (body["data"], body["version"], body["ttl_remaining"]) == ({"a": 1}, 1, 3600)


async def test_merge_patch_and_if_match() -> None:
    """merge is RFC 7396; ETag carries the version; If-Match mismatches get 412 and change nothing."""
    async with sidecar() as s:
        mid = await _stash(s, {"task": "t", "tags": ["x"], "drop": 1})
        async with s.session.patch(
            f"/update/{mid}",
            json={"merge": {"drop": None, "progress": 0.5, "tags": ["y"]}},
            headers={"If-Match": '"1"', **KEY},
        ) as resp:
            assert resp.status == 200
            assert resp.headers["ETag"] == '"2"'
        async with s.session.get(f"/recall/{mid}", headers=KEY) as resp:
            assert (await resp.json())["data"] == {"task": "t", "tags": ["y"], "progress": 0.5}
        for tag in ['"1"', 'W/"2"', '"abc"']:
            async with s.session.patch(
                f"/update/{mid}", json={"data": 0}, headers={"If-Match": tag, **KEY}
            ) as resp:
                assert resp.status == 412, tag
                err = (await resp.json())["error"]
                assert err["code"] == "version_mismatch"
                assert err["current"] == 2
        async with s.session.patch(
            f"/update/{mid}", json={"merge": None}, headers={"If-Match": "*", **KEY}
        ) as resp:
            assert resp.status == 200
        async with s.session.get(f"/recall/{mid}", headers=KEY) as resp:
            body = await resp.json()
            assert (body["data"], body["version"]) == (None, 3)
        async with s.session.patch(
            f"/update/{mid}", json={"data": 1}, headers={"If-Match": '"1", "3"', **KEY}
        ) as resp:
            assert resp.status == 200
        async with s.session.patch(
            "/update/missing1", json={"data": 1}, headers={"If-Match": '"1"', **KEY}
        ) as resp:
            assert resp.status == 404


def test_if_match_parsing() -> None:
    """Strong tags give versions, '*' none, lists any of theirs, weak or odd tags never match."""
    assert if_match_version(None) is None
    assert if_match_version(" * ") is None
    assert if_match_version('"12"') == 12
    assert if_match_version('"1", "2"') == (1, 2)
    assert if_match_version('"1",W/"2"') == (1, 0)
    assert if_match_version("12") == 12
    for never in ['W/"12"', '"v12"', '"99999999999999999999999"', '""', '"\u0661"']:
        assert if_match_version(never) == 0, never
    for bad in ["", '"', ",", '"1",', '"a,b"', "W/12", '"1" "2"', "-1"]:
        with pytest.raises(errors.BadRequest, match="If-Match must be"):
            if_match_version(bad)


async def test_missing_expired_and_other_tenant_ids_get_the_same_404() -> None:
    """The three answers are byte-identical, so none of them tells that an id exists."""
    async with sidecar() as s:
        expiring = await _stash(s, {"x": 1}, ttl=10)
        others = await _stash(s, {"x": 1}, headers={"X-API-KEY": "bob-key"})
        s.clock.now += 10_000
        answers = []
        for mid in ["neverwas", expiring, others]:
            for method, path, body in [
                ("GET", f"/recall/{mid}", None),
                ("PATCH", f"/update/{mid}", {"data": 1}),
                ("DELETE", f"/forget/{mid}", None),
            ]:
                async with s.session.request(method, path, json=body, headers=KEY) as resp:
                    headers = {k: v for k, v in resp.headers.items() if k != "Date"}
                    answers.append((method, resp.status, headers, await resp.read()))
        assert all(a[1] == 404 for a in answers)
        assert answers[0:3] == answers[3:6] == answers[6:9]
        async with s.session.get(f"/recall/{others}", headers={"X-API-KEY": "bob-key"}) as r:
            assert r.status == 200


async def test_listing_pages_through_every_memory_without_data() -> None:
    """GET /stash follows next_cursor to the end: each id once, with ttl, size and version."""
    async with sidecar() as s:
        made = {await _stash(s, {"n": i}, ttl=100 + i) for i in range(25)}
        await _stash(s, {"n": -1}, headers={"X-API-KEY": "bob-key"})
        expired = await _stash(s, {"gone": True}, ttl=1)
        s.clock.now += 1000
        seen: dict[str, dict[str, Any]] = {}
        cursor: str | None = None
        pages = 0
        while True:
            params = {"limit": "10"} if cursor is None else {"limit": "10", "cursor": cursor}
            async with s.session.get("/stash", params=params, headers=KEY) as resp:
                assert resp.status == 200
                page = await resp.json()
            pages += 1
            assert len(page["memories"]) <= 10
            for m in page["memories"]:
                assert m["memory_id"] not in seen
                seen[m["memory_id"]] = m
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert set(seen) == made
        assert expired not in seen
        assert pages == 3
        one = next(iter(seen.values()))
        assert set(one) == {"memory_id", "ttl_remaining", "expires_at", "size", "version"}
        assert one["size"] == len(b'{"n":0}')
        assert one["version"] == 1
        for params, field in [
            ({"limit": "0"}, "limit"),
            ({"limit": "1001"}, "limit"),
            ({"limit": "ten"}, "limit"),
            ({"cursor": "-1"}, "cursor"),
            ({"cursor": "x"}, "cursor"),
            ({"cursor": "9223372036854775808"}, "cursor"),  # past a 64-bit row id
        ]:
            async with s.session.get("/stash", params=params, headers=KEY) as resp:
                assert resp.status == 422
                err = (await resp.json())["error"]
                assert err["field"] == field
                if params.get("limit") in ("0", "1001"):
                    assert (err["minimum"], err["maximum"]) == (1, 1000)


async def test_listing_keeps_only_ids_matching_the_pattern() -> None:
    """GET /stash?pattern= lists the matching ids alone, across pages; a long pattern is a 400."""
    async with sidecar() as s:
        for i in range(12):
            s.store.run(Set(ALICE, b"task:%d" % i, b"1", START_MS + 60_000))
            s.store.run(Set(ALICE, b"note:%d" % i, b"2", START_MS + 60_000))
        seen: list[str] = []
        params = {"limit": "5", "pattern": "task:*"}
        while True:
            async with s.session.get("/stash", params=params, headers=KEY) as resp:
                assert resp.status == 200
                page = await resp.json()
            assert len(page["memories"]) <= 5
            seen += [m["memory_id"] for m in page["memories"]]
            if page["next_cursor"] is None:
                break
            params["cursor"] = page["next_cursor"]
        assert sorted(seen) == sorted(f"task:{i}" for i in range(12))
        # The pattern's bytes are its percent-decoded query bytes, UTF-8 or not.
        s.store.run(Set(ALICE, b"\xffraw", b"1", START_MS + 60_000))
        async with s.session.get(URL("/stash?pattern=%FF*", encoded=True), headers=KEY) as resp:
            assert [m["memory_id"] for m in (await resp.json())["memories"]] == ["\ufffdraw"]
        params = {"pattern": "*" * 1025}
        async with s.session.get("/stash", params=params, headers=KEY) as resp:
            assert resp.status == 400
            assert "1024" in (await resp.json())["error"]["message"]


async def test_strict_keyring_refuses_missing_and_bad_keys_with_401() -> None:
    """When the keyring has no anonymous principal, no key and unknown keys get 401."""
    keyring = StrictKeyring({b"good": "ns-good"})
    async with sidecar(keyring=keyring) as s:
        for headers, code in [
            ({}, "unauthorized"),
            ({"X-API-KEY": "bad"}, "invalid_api_key"),
            ({"Authorization": "Bearer bad"}, "invalid_api_key"),
            ({"Authorization": "Basic Z29vZA=="}, "invalid_api_key"),
        ]:
            async with s.session.post("/stash", json={"data": 1}, headers=headers) as resp:
                assert resp.status == 401
                assert resp.headers["WWW-Authenticate"] == 'Bearer realm="stash"'
                assert (await resp.json())["error"]["code"] == code
        async with s.session.post(
            "/stash", json={"data": 1}, headers={"Authorization": "Bearer good"}
        ) as resp:
            mid = (await resp.json())["memory_id"]
        async with s.session.get(f"/recall/{mid}", headers={"X-API-KEY": "good"}) as resp:
            assert resp.status == 200
        async with s.session.get(
            f"/recall/{mid}", headers={"X-API-KEY": "good", "Authorization": "Bearer other"}
        ) as resp:
            assert resp.status == 400
        async with s.session.get("/healthz") as resp:
            assert resp.status == 200
        assert s.count("ns-good") == 1


async def test_rate_limit_answers_429_with_ietf_fields() -> None:
    """Over the rate: 429, Retry-After and RateLimit/RateLimit-Policy; other keys unaffected."""
    now = [0.0]
    limiter = LocalLimiter(lambda: now[0])
    rate = Rate(2, 1, 2)
    async with sidecar(limiter=limiter, rate_of=lambda p: rate) as s:
        for remaining in (1, 0):
            async with s.session.get("/stash", headers=KEY) as resp:
                assert resp.status == 200
                assert resp.headers["RateLimit-Policy"] == '"default";q=2;w=1'
                assert resp.headers["RateLimit"].startswith(f'"default";r={remaining};t=')
        async with s.session.post("/stash", json={"data": 1}, headers=KEY) as resp:
            assert resp.status == 429
            assert resp.headers["Retry-After"] == "1"
            assert resp.headers["RateLimit"] == '"default";r=0;t=1'
            assert resp.headers["RateLimit-Policy"] == '"default";q=2;w=1'
            err = (await resp.json())["error"]
            assert err["code"] == "rate_limited"
            assert err["retry_after_ms"] == 500
        assert s.count(ALICE) == 0, "a refused request changes nothing"
        async with s.session.get("/stash", headers={"X-API-KEY": "bob-key"}) as resp:
            assert resp.status == 200
        now[0] += 500
        async with s.session.get("/stash", headers=KEY) as resp:
            assert resp.status == 200
    async with (
        sidecar(limiter=limiter, rate_of=lambda p: None) as s,
        s.session.get("/stash", headers=KEY) as resp,
    ):
        assert resp.status == 200
        assert "RateLimit" not in resp.headers


async def test_routing_errors_and_health() -> None:
    """Unknown paths 404, wrong methods 405 with Allow, health without a key, all in JSON."""
    async with sidecar(keyring=StrictKeyring({})) as s:
        async with s.session.get("/healthz") as resp:
            assert resp.status == 200
            assert await resp.json() == {
                "status": "ok",
                "version": "0.1.0",
                "backend": "memory",
                "mcp": "off",  # this in-process door is built without it
            }
        for method, path, status, allow in [
            ("GET", "/nope", 404, None),
            ("GET", "/recall", 404, None),
            ("GET", "/recall/a/b", 404, None),
            ("GET", "/recall/", 404, None),
            ("PUT", "/stash", 405, "POST, GET"),
            ("POST", "/recall/x", 405, "GET"),
            ("POST", "/healthz", 405, "GET"),
        ]:
            async with s.session.request(method, path) as resp:
                assert resp.status == status, path
                assert resp.headers.get("Allow") == allow
                assert (await resp.json())["error"]["code"] in ("not_found", "method_not_allowed")


async def test_the_index_and_the_contract_are_served_without_a_key() -> None:
    """GET / lists the endpoints and links /openapi.yaml, which is the packaged document."""
    async with sidecar(keyring=StrictKeyring({})) as s:
        async with s.session.get("/") as resp:
            assert resp.status == 200
            assert resp.content_type == "application/json"
            index = await resp.json()
        assert (index["name"], index["version"], index["openapi"]) == (
            "stash",
            __version__,
            "/openapi.yaml",
        )
        async with s.session.get("/openapi.yaml") as resp:
            assert resp.status == 200
            assert resp.content_type == "application/yaml"
            document = yaml.safe_load(await resp.read())
        assert document["info"]["version"] == __version__
        listed = {(e["method"].lower(), e["path"]) for e in index["endpoints"]}
        methods = {"get", "post", "patch", "delete"}
        paths = document["paths"].items()
        described = {(m, path) for path, ops in paths for m in ops if m in methods}
        assert listed == described - {("get", "/")}, "the index lists every documented endpoint"
        async with s.session.get("/", headers={"Accept": "text/html,*/*;q=0.8"}) as resp:
            assert resp.status == 200
            assert resp.content_type == "text/html"
            page = await resp.text()
        assert '<a href="/openapi.yaml">' in page
        assert "<code>/recall/{memory_id}</code>" in page
        for method, path in [("POST", "/"), ("DELETE", "/openapi.yaml")]:
            async with s.session.request(method, path) as resp:
                assert resp.status == 405
                assert resp.headers["Allow"] == "GET"
        async with s.session.get("/nope") as resp:
            assert (await resp.json())["error"]["message"] == (
                "no such endpoint; GET /openapi.yaml lists them"
            )


def test_timeouts_are_bounded_and_error_table_is_complete() -> None:
    """The slow-client deadline is at most 10 s; every error class has a status and code."""
    assert REQUEST_TIMEOUT + WATCH_INTERVAL <= 10
    assert IDLE_TIMEOUT > REQUEST_TIMEOUT
    kinds = [
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.StashError)
    ]
    assert len(kinds) > 20
    for cls in kinds:
        status, code, _ = error_row(cls)
        assert 400 <= status < 600, cls
        assert re.fullmatch(r"[a-z_]+", code)
    status, body = error_body(errors.PayloadTooLarge(1048576, 2097152))
    assert status == 413
    assert json.loads(body) == {
        "error": {
            "code": "payload_too_large",
            "message": "value is 2097152 bytes, the limit is 1048576 bytes",
            "limit": 1048576,
            "actual": 2097152,
        }
    }


async def test_ids_with_any_bytes_are_addressable() -> None:
    """Percent-encoded path segments reach RESP keys with spaces, colons and slashes."""
    async with sidecar() as s:
        s.store.run(Set(ALICE, b"user:1/plan x", b'{"ok":true}', START_MS + 60_000))
        async with s.session.get("/recall/user:1%2Fplan%20x", headers=KEY) as resp:
            assert resp.status == 200
            assert (await resp.json())["memory_id"] == "user:1/plan x"


# -- the real daemon: both doors on one engine -------------------------------------------
@pytest.fixture(scope="module")
def daemon() -> Any:  # noqa: ANN401
    """A daemon with both doors on free ports."""
    with StashDaemon() as d:
        yield d


async def test_resp_and_http_act_on_the_same_memories(daemon: StashDaemon) -> None:
    """AUTH k over RESP and X-API-KEY k (or Bearer k) over HTTP see one namespace."""
    key = f"key-{uuid.uuid4().hex}"
    r = redis.Redis(port=daemon.port, password=key)
    mid = r.execute_command("STASH", '{"from":"resp"}', "EX", 600).decode()
    async with aiohttp.ClientSession(daemon.http_url) as http:
        async with http.get(f"/recall/{mid}", headers={"X-API-KEY": key}) as resp:
            body = await resp.json()
            assert body["data"] == {"from": "resp"}
        meta = r.execute_command("RECALL", mid, "WITHMETA")
        assert meta[b"ttl_remaining"] == body["ttl_remaining"]
        assert meta[b"expires_at"].decode() == body["expires_at"]
        assert meta[b"version"] == body["version"] == 1
        async with http.post(
            "/stash", json={"data": {"from": "http"}}, headers={"Authorization": f"Bearer {key}"}
        ) as resp:
            hid = (await resp.json())["memory_id"]
        assert json.loads(r.execute_command("RECALL", hid)) == {"from": "http"}
        assert r.execute_command("UPDATE", hid, "MERGE", '{"more":1}') is not None
        async with http.patch(
            f"/update/{hid}",
            json={"extra_seconds": 10},
            headers={"If-Match": '"2"', "X-API-KEY": key},
        ) as resp:
            assert resp.status == 200
        async with http.get(f"/recall/{mid}", headers={"X-API-KEY": "someone-else"}) as resp:
            assert resp.status == 404
        async with http.get(f"/recall/{mid}") as resp:
            assert resp.status == 404, "the default namespace is not the key's"
        async with http.delete(f"/forget/{mid}", headers={"X-API-KEY": key}) as resp:
            assert resp.status == 204
        assert r.execute_command("RECALL", mid) is None
        async with http.get("/stash", headers={"X-API-KEY": key}) as resp:
            listed = [m["memory_id"] for m in (await resp.json())["memories"]]
        assert listed == [hid]
        anon = redis.Redis(port=daemon.port)
        anon.set("shared-plan", '{"step":1}')
        async with http.get("/recall/shared-plan") as resp:
            assert (await resp.json())["data"] == {"step": 1}
        anon.delete("shared-plan")
    r.close()


def test_listening_event_names_both_ports_and_no_http_turns_it_off() -> None:
    """The daemon logs both ports; --no-http binds nothing for HTTP."""
    with StashDaemon(log_level="info", env={"STASH_LOG_FORMAT": "json"}) as d:
        pass
    events = [json.loads(line) for line in d.stderr.splitlines() if line.startswith("{")]
    listening = next(e for e in events if e["event"] == "listening")
    assert (listening["port"], listening["http_port"]) == (d.port, d.http_port)
    with StashDaemon("--no-http", log_level="info", env={"STASH_LOG_FORMAT": "json"}) as d:
        assert d.http_port == 0
    events = [json.loads(line) for line in d.stderr.splitlines() if line.startswith("{")]
    assert next(e for e in events if e["event"] == "listening")["http_port"] is None


class BrokenDisk(MemoryStore):
    """A store that runs batches (like SQLite) whose disk has gone away."""

    inline = False

    async def run_many(self, ops: list[Any]) -> list[Any]:
        raise OSError("disk gone")


class Buggy(MemoryStore):
    """An inline store with a bug: a failure that is no StashError."""

    def run(self, op: Any) -> Any:  # noqa: ANN401
        raise RuntimeError("bug")


async def test_store_failures_are_503_and_bugs_are_a_json_500() -> None:
    """A failing store gives 503 unavailable (health too); a bug gives 500 without details."""
    async with sidecar(store=BrokenDisk()) as s:
        for method, path in [("GET", "/healthz"), ("GET", "/recall/abc"), ("POST", "/stash")]:
            async with s.session.request(method, path, json={"data": 1}) as resp:
                assert resp.status == 503
                err = (await resp.json())["error"]
                assert err == {"code": "unavailable", "message": "store unavailable: OSError"}
    async with sidecar(store=Buggy()) as s, s.session.get("/recall/abc") as resp:
        assert resp.status == 500
        assert await resp.json() == {
            "error": {"code": "internal_error", "message": "internal error"}
        }


async def test_writes_are_logged_with_sizes_never_values() -> None:
    """stash_created, stash_updated and stash_forgotten name the id and size, not the data."""
    lines = io.StringIO()
    # The sidecar's clock stands still at START_MS, so the events' TTLs are exact.
    async with sidecar(events=WriteEvents("json", lambda: START_MS, lines)) as s:
        secret = "payload-" + uuid.uuid4().hex
        mid = await _stash(s, {"secret": secret}, ttl=60)
        async with s.session.patch(f"/update/{mid}", json={"extra_seconds": 5}, headers=KEY):
            pass
        async with s.session.delete(f"/forget/{mid}", headers=KEY):
            pass
        assert s.api.ctx.events is not None
        s.api.ctx.events.flush()
        logs = [json.loads(line) for line in lines.getvalue().splitlines()]
        events = [e for e in logs if e.get("door") == "http"]
        assert [e["event"] for e in events] == ["stash_created", "stash_updated", "stash_forgotten"]
        assert events[0]["id"] == mid
        assert events[0]["namespace"] == ALICE
        assert events[0]["ttl_seconds"] == 60
        assert events[0]["payload_bytes"] == len(
            json.dumps({"secret": secret}, separators=(",", ":"))
        )
        assert secret not in repr(logs)


def test_protected_mode_refuses_both_doors_on_a_public_address() -> None:
    """Open mode on a non-loopback host exits before binding RESP or HTTP."""
    done = subprocess.run(
        [sys.executable, "-m", "stashd", "--host", "0.0.0.0", "--port", "0", "--http-port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("STASH_")},
    )
    assert done.returncode == 2
    assert "refusing to listen on 0.0.0.0" in done.stderr


async def test_key_bytes_that_are_not_utf8_name_the_same_namespace_as_resp(
    daemon: StashDaemon,
) -> None:
    """A key sent as raw header bytes is the key RESP AUTH gets: one namespace for both."""
    key = b"k\xff\xfe-" + uuid.uuid4().hex.encode()
    r = redis.Redis(port=daemon.port, password=key)  # type: ignore[arg-type]  # bytes go out as they are
    mid = r.execute_command("STASH", '{"raw":true}').decode()
    request = (
        f"GET /recall/{mid} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n".encode()
        + b"X-API-KEY: "
        + key
        + b"\r\n\r\n"
    )
    raw = await raw_exchange(daemon.http_port, request)
    status, _, body = split_response(raw)
    assert status == 200
    assert json.loads(body)["data"] == {"raw": True}
    r.close()


async def test_a_value_set_over_resp_that_is_not_json() -> None:
    """Reading or merging it is 409 stored_value_not_json; replacing it with data works."""
    async with sidecar() as s:
        s.store.run(Set(ALICE, b"plain", b"hello", START_MS + 60_000))
        async with s.session.get("/recall/plain", headers=KEY) as resp:
            assert resp.status == 409
            err = (await resp.json())["error"]
            assert err["code"] == "stored_value_not_json"
            assert (err["line"], err["column"], err["position"]) == (1, 1, 0)
            assert "hello" not in err["message"]
        async with s.session.patch("/update/plain", json={"merge": {"a": 1}}, headers=KEY) as resp:
            assert resp.status == 409
        async with s.session.patch("/update/plain", json={"data": {"a": 1}}, headers=KEY) as r:
            assert r.status == 200
        async with s.session.get("/recall/plain", headers=KEY) as resp:
            assert (await resp.json())["data"] == {"a": 1}


# -- raw requests: what clients see byte by byte ------------------------------------------
RAW_KEY = b"X-API-KEY: alice-key\r\n"


def _recall(memory_id: bytes, headers: bytes = RAW_KEY) -> bytes:
    return b"GET /recall/" + memory_id + b" HTTP/1.1\r\nHost: t\r\n" + headers + b"\r\n"


def _frozen() -> float:
    return 0.0


def _three(_p: object) -> Rate:
    return Rate(3, 60, 3)


async def test_metered_requests_carry_their_fields_and_every_refusal_costs_one() -> None:
    """Under a rate of 3: RateLimit fields on answers, refusals counted, then 429 and Retry-After."""
    for requests, statuses in (
        ([post(b'{"data": 1}')] * 4, [201, 201, 201, 429]),
        (
            [
                post(b'{"data": 1, "ttl": 0}'),
                post(b"{"),
                post(b'{"data": 1}'),
                post(b'{"data": 2}'),
            ],
            [422, 400, 201, 429],
        ),
        ([_recall(b"known001")] * 4, [200, 200, 200, 429]),
    ):
        async with sidecar(limiter=LocalLimiter(_frozen), rate_of=_three) as s:
            s.store.run(Set(ALICE, b"known001", b'{"k":[1,2]}', START_MS + 60_000))
            answers = await exchange(s.port, *requests)
            assert [split_response(a)[0] for a in answers] == statuses
            assert b"\r\nRetry-After: 20\r\n" in answers[-1]  # one of 3 units a minute
            for answer, status in zip(answers, statuses, strict=True):
                assert (b"\r\nRateLimit: " in answer) == (status < 300 or status == 429)
            assert s.count(ALICE) == 1 + statuses.count(201)  # known001, and what was stored


async def test_odd_forms_of_requests_are_answered_by_their_route() -> None:
    """Query strings, trailing slashes, absolute-form targets, Connection: close, chunked bodies."""
    chunked = (
        b"POST /stash HTTP/1.1\r\nHost: t\r\n" + RAW_KEY
        + b'Transfer-Encoding: chunked\r\n\r\n9\r\n{"data":1\r\n1\r\n}\r\n0\r\n\r\n'
    )  # fmt: skip
    async with sidecar() as s:
        for request, status in (
            (post(b'{"data": 1}', path=b"/stash?x=1"), 201),
            (post(b'{"data": 1}', path=b"/stash/"), 404),
            (post(b'{"data": 1}', path=b"/recall/abc"), 405),
            (post(b'{"data": 1}', path=b"http://t/stash"), 201),
            (post(b'{"data": 1}', RAW_KEY + b"Connection: close\r\n"), 201),
            (chunked, 201),
            (b"GET /stash HTTP/1.1\r\nHost: t\r\n" + RAW_KEY + b"\r\n", 200),
            (b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", 200),
            (b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n", 404),
        ):
            (answer,) = await exchange(s.port, request)
            assert split_response(answer)[0] == status, request
            assert b"\r\nContent-Type: application/json\r\n" in answer
        assert s.count(ALICE) == 4


async def test_a_utf8_id_is_reached_percent_encoded_and_refused_raw() -> None:
    """Percent escapes reach the key's bytes; raw non-ASCII in a target is not HTTP (400)."""
    async with sidecar() as s:
        s.store.run(Set(ALICE, "\u00e9t\u00e9".encode(), b'"summer"', START_MS + 60_000))
        (answer,) = await exchange(s.port, _recall(b"%C3%A9t%C3%A9"))
        status, _, body = split_response(answer)
        assert status == 200
        assert json.loads(body)["memory_id"] == "\u00e9t\u00e9"
        assert json.loads(body)["data"] == "summer"
        raw = await raw_exchange(s.port, _recall("\u00e9t\u00e9".encode()))
        status, headers, body = split_response(raw)
        assert (status, headers["connection"]) == (400, "close")
        assert json.loads(body)["error"]["code"] == "bad_request"


class CountingKeyring(StrictKeyring):
    """A strict keyring that counts its lookups."""

    def __init__(self) -> None:
        super().__init__({b"alice-key": "alice"})
        self.lookups = 0

    def authenticate(self, username: str | None, key: bytes) -> Principal | None:
        """Count, then look up."""
        self.lookups += 1
        return super().authenticate(username, key)


async def test_a_refused_key_is_looked_up_and_counted_once() -> None:
    """One lookup per request, refused or not; each refusal counts once against the address."""
    keyring = CountingKeyring()
    async with sidecar(keyring=keyring) as s:
        throttle = s.api.throttle
        assert throttle is not None
        failed: list[str] = []
        count = throttle.failed

        def counted(address: str) -> None:
            failed.append(address)
            count(address)

        throttle.failed = counted  # type: ignore[method-assign]
        answers = await exchange(
            s.port,
            post(b'{"data": 1}', b"X-API-KEY: nope\r\n"),
            _recall(b"abc", b"X-API-KEY: nope\r\n"),
            post(b'{"data": 1}'),
        )
        assert [split_response(a)[0] for a in answers] == [401, 401, 201]
        assert keyring.lookups == 3
        assert failed == ["127.0.0.1", "127.0.0.1"]


async def test_a_failing_store_gets_a_500_and_a_closed_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A failure of our own: the 500 body that says nothing, and the connection ends."""
    async with sidecar() as s:

        def broken(_op: object) -> object:
            raise RuntimeError("boom")

        monkeypatch.setattr(s.store, "run", broken)
        raw = await raw_exchange(s.port, post(b'{"data": 1}'))
        status, headers, body = split_response(raw)
        assert status == 500
        assert headers["connection"] == "close"
        assert body == INTERNAL_ERROR


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_a_failure_of_our_own_is_a_500_for_that_request_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """An answer that cannot be made ends its own connection with the 500, on a batch too."""

    def broken(*_: object) -> object:
        raise RuntimeError("boom")

    monkeypatch.setattr(HttpApi, "created", broken)
    store = MemoryStore() if backend == "memory" else SQLiteStore(tmp_path / "s.db")
    await store.open()
    try:
        async with sidecar(store=store) as s:  # type: ignore[arg-type]
            raw = await raw_exchange(s.port, post(b'{"data": 1}'))
            status, _, body = split_response(raw)
            assert (status, body) == (500, INTERNAL_ERROR)
            (ok,) = await exchange(s.port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            assert split_response(ok)[0] == 200
    finally:
        await store.close()


async def test_json_nested_too_deep_is_a_400() -> None:
    """Past the depth limit: 400 invalid_json naming both depths, not a 500 or a reset."""
    body = b'{"data":' + b"[" * 2000 + b"]" * 2000 + b"}"
    roomy = OpenKeyring(Limits(max_payload=100_000, default_ttl_ms=60_000, max_ttl_ms=60_000))
    async with sidecar(keyring=roomy) as s:
        (answer,) = await exchange(s.port, post(body))
    status, _, error = split_response(answer)
    assert status == 400
    err = json.loads(error)["error"]
    assert err["code"] == "invalid_json"
    assert err["message"] == (
        f"request body is not valid JSON: nested 2001 levels deep, the limit is {MAX_DEPTH} levels"
    )


async def test_answers_keep_their_fields_and_the_connection() -> None:
    """POST and GET over one kept-alive connection: status, fields, Date and Server."""
    async with sidecar() as s:
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
        try:
            body = b'{"data": {"a": 1}}'
            writer.write(post(body, b"X-API-KEY: k\r\n"))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            status, headers, _ = split_response(head)
            created = await reader.readexactly(int(headers["content-length"]))
            memory_id = created.split(b'"memory_id":"')[1].split(b'"')[0].decode()
            assert status == 201
            assert head.startswith(b"HTTP/1.1 201 Created\r\n")
            assert headers["etag"] == '"1"'
            assert headers["location"] == f"/recall/{memory_id}"
            assert headers["content-type"] == "application/json"
            assert re.fullmatch(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", headers["date"])
            assert headers["server"].startswith("Python/")
            assert "connection" not in headers
            writer.write(
                f"GET /recall/{memory_id} HTTP/1.1\r\nHost: t\r\nX-API-KEY: k\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            rest = await asyncio.wait_for(reader.read(), 5)  # read to the server's close
            status, headers, recalled = split_response(rest)
            assert status == 200
            assert headers["connection"] == "close"
            assert headers["etag"] == '"1"'
            assert recalled.startswith(b'{"memory_id":"%s","data":{"a":1},' % memory_id.encode())
        finally:
            writer.close()


async def test_a_large_answer_reaches_a_slow_reader_whole() -> None:
    """A recall far over the socket buffer waits for the client instead of dropping bytes."""
    limits = Limits(max_payload=4_000_000, default_ttl_ms=3_600_000, max_ttl_ms=86_400_000)
    async with sidecar(keyring=OpenKeyring(limits)) as s:
        data = "x" * 3_000_000
        async with s.session.post("/stash", json={"data": data}, headers={"X-API-KEY": "k"}) as r:
            memory_id = (await r.json())["memory_id"]
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port, limit=2**16)
        try:
            writer.write(
                f"GET /recall/{memory_id} HTTP/1.1\r\nHost: t\r\nX-API-KEY: k\r\n\r\n".encode()
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            length = int(split_response(head)[1]["content-length"])
            await asyncio.sleep(0.3)  # the server's write is blocked on us by now
            got = await asyncio.wait_for(reader.readexactly(length), 10)
            assert got.endswith(b'"version":1}')
            assert f'"data":"{data}"'.encode() in got
        finally:
            writer.close()


async def test_two_keys_in_one_request_are_refused_not_guessed_between() -> None:
    """Two X-API-KEY (or Authorization) headers are a 400 naming the header; nothing is written."""
    async with sidecar() as s:
        for headers, name in [
            (b"X-API-KEY: alice-key\r\nX-API-KEY: bob-key\r\n", "X-API-KEY"),
            (b"X-API-KEY: alice-key\r\nx-api-key: alice-key\r\n", "X-API-KEY"),
            (
                b"Authorization: Bearer alice-key\r\nAuthorization: Bearer bob-key\r\n",
                "Authorization",
            ),
        ]:
            (answer,) = await exchange(s.port, post(b'{"data": 1}', headers))
            status, _, body = split_response(answer)
            assert status == 400, body
            error = json.loads(body)["error"]
            assert error == {"code": "bad_request", "message": f"send one {name} header, got 2"}
        assert s.count(ALICE) == 0
        assert s.count(namespace_of(b"bob-key")) == 0


async def test_values_json_text_cannot_carry_are_refused_for_what_they_hold() -> None:
    """A lone surrogate and 1e400 parse, but have no JSON text: 400 saying which, not the other."""
    async with sidecar() as s:
        for body, holds in [
            (b'{"data": "\\ud800"}', "it holds a lone surrogate"),
            (b'{"data": [1e400]}', "it holds a number out of the range of a double"),
        ]:
            async with s.session.post(
                "/stash", data=body, headers={**KEY, "Content-Type": "application/json"}
            ) as resp:
                error = (await resp.json())["error"]
                assert resp.status == 400, error
                assert error["code"] == "invalid_json"
                assert holds in error["message"], error
        assert s.count(ALICE) == 0


async def test_an_unknown_field_is_named_when_it_is_a_plain_name() -> None:
    """A typo such as ``extend`` is named back; a field name that is not plain is not echoed."""
    async with sidecar() as s:
        mid = await _stash(s, {"a": 1}, ttl=60)
        async with s.session.patch(f"/update/{mid}", json={"extend": 5}, headers=KEY) as resp:
            assert resp.status == 422
            err = (await resp.json())["error"]
        assert err["field"] == "extend"
        assert err["message"] == (
            "unknown field extend; the body may only have data, extra_seconds, merge"
        )
        odd = "<script>" + "x" * 100
        async with s.session.post("/stash", json={"data": 1, odd: 2}, headers=KEY) as resp:
            assert resp.status == 422
            err = (await resp.json())["error"]
        assert "field" not in err
        assert odd not in err["message"]
