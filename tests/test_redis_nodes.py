"""Many stashd nodes on one Redis: shared data, one rate limit, independent lives, outages.

Every test starts its own daemons (``python -m stashd --backend redis``) on the session's
redis-server, or on a redis-server of its own when it stops Redis. Nothing here sleeps
for a TTL; the waits are for processes and for the link's retry interval.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from stashd.cli import stash_main
from stashd.config import DEFAULT_REDIS_URL, ConfigError, load
from stashd.redistarget import RedisTarget
from stashd.registry_redis import RedisRegistry
from stashd.tenancy import issue_key
from tests.support.resp_client import CLOSED, RespClient
from tests.support.servers import (
    RedisClusterServers,
    RedisServer,
    StashDaemon,
    free_port,
    redis_nodes,
)

pytestmark = pytest.mark.slow


def key_for(url: str, tier: str = "free", user: str | None = None) -> str:
    """A registered key in the Redis registry, as ``stash keys create --backend redis`` makes."""
    registry = RedisRegistry(RedisTarget.parse(url))
    try:
        return issue_key(registry, user or f"u{uuid.uuid4().hex[:10]}", tier).secret
    finally:
        registry.close()


def http(
    url: str, method: str = "GET", body: bytes | None = None, key: str = ""
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method)  # noqa: S310 - a test URL
    if key:
        request.add_header("X-API-KEY", key)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_written_via_one_node_is_read_via_another(server: RedisServer) -> None:
    """RESP and HTTP writes through node A are what node B reads, namespaces included."""
    a, b = redis_nodes(server.url)
    with a, b:
        ca, cb = RespClient(a.port), RespClient(b.port)
        assert ca.call("AUTH", "team-key").render() == "+OK"
        assert cb.call("AUTH", "team-key").render() == "+OK"
        assert ca.call("SET", "plan", '{"step":1}', "EX", "600").render() == "+OK"
        assert cb.call("GET", "plan").render() == "$'{\"step\":1}'"
        assert cb.call("TTL", "plan").render() in (":600", ":599")
        mid = ca.call("STASH", '{"task":"summarize"}').value.decode()
        assert cb.call("UPDATE", mid, "MERGE", '{"progress":0.5}', "IFVERSION", "1").kind == ":"
        status, body = http(f"{a.http_url}/recall/{mid}", key="team-key")
        assert status == 200
        assert json.loads(body)["data"] == {"task": "summarize", "progress": 0.5}
        assert json.loads(body)["version"] == 2
        status, body = http(f"{b.http_url}/stash", "POST", b'{"data": {"n": 1}}', key="team-key")
        assert status == 201
        made = json.loads(body)["memory_id"]
        assert ca.call("RECALL", made).render() == "$'{\"n\":1}'"
        assert ca.call("DBSIZE").render() == cb.call("DBSIZE").render() == ":3"
        assert RespClient(b.port).call("GET", "plan").render() == "(nil)"  # other namespace
        status, body = http(f"{b.http_url}/healthz")
        assert (status, json.loads(body)["backend"]) == (200, "redis")
        ca.close()
        cb.close()


def test_one_rate_limit_for_every_node(server: RedisServer) -> None:
    """Free tier (60/min, burst 10): 40 rapid commands over A and B get burst + rate*T + 1 at most."""
    a, b = redis_nodes(server.url, "--auth", "keys")
    secret = key_for(server.url, "free")
    with a, b:
        clients = [RespClient(a.port), RespClient(b.port)]
        for client in clients:
            assert client.call("AUTH", secret).render() == "+OK"
        started = time.monotonic()
        replies = [clients[i % 2].call("GET", "k").render() for i in range(40)]
        elapsed = time.monotonic() - started
        allowed = sum(not r.startswith("-RATELIMIT") for r in replies)
        assert 10 <= allowed <= 10 + int(elapsed * 1) + 1, (allowed, elapsed)
        assert replies[:10] == ["(nil)"] * 10
        refused = [r for r in replies if r.startswith("-RATELIMIT")]
        assert refused[0].startswith("-RATELIMIT rate limit exceeded, retry after ")
        status, _ = http(f"{b.http_url}/recall/x", key=secret)
        assert status == 429  # the HTTP door draws on the same budget
        for client in clients:
            client.close()


def test_stopping_a_node_does_not_disturb_another(server: RedisServer) -> None:
    """B keeps answering a busy client, without an error, while A shuts down."""
    a, b = redis_nodes(server.url)
    with a, b:
        client = RespClient(b.port)
        errors: list[str] = []
        stop = threading.Event()
        served = 0

        def busy() -> None:
            nonlocal served
            while not stop.is_set():
                reply = client.call("INCR", "n").render()
                if not reply.startswith(":"):
                    errors.append(reply)
                served += 1

        worker = threading.Thread(target=busy)
        worker.start()
        time.sleep(0.2)
        assert a.stop() == 0
        time.sleep(0.2)
        stop.set()
        worker.join()
        assert errors == []
        assert served > 10
        assert client.call("GET", "n").render() == f"$'{served}'"
        client.close()


def test_redis_down_is_a_clear_error_and_nodes_recover_without_restart(tmp_path: Path) -> None:
    """Redis stopped: UNAVAILABLE at once, nodes alive; Redis back: both serve again."""
    with RedisServer("--appendonly", "yes", "--appendfsync", "always") as own:
        secret = key_for(own.url, "enterprise")
        a, b = redis_nodes(own.url, "--auth", "keys")
        with a, b:
            ca, cb = RespClient(a.port), RespClient(b.port)
            for client in (ca, cb):
                assert client.call("AUTH", secret).render() == "+OK"
            assert ca.call("SET", "k", "before").render() == "+OK"
            own.stop()
            started = time.monotonic()
            down = cb.call("GET", "k").render()
            assert time.monotonic() - started < 2
            assert down.startswith("-UNAVAILABLE store unavailable: cannot connect to Redis at ")
            assert ca.call("SET", "k", "during").render().startswith("-UNAVAILABLE")
            late = RespClient(a.port)
            assert late.call("AUTH", secret).render() == (
                "-UNAVAILABLE store unavailable: key registry"
            )
            assert ca.call("PING").render() == "+PONG"
            status, _ = http(f"{b.http_url}/healthz")
            assert status == 503
            assert a.proc is not None
            assert b.proc is not None
            assert a.proc.poll() is None
            assert b.proc.poll() is None
            own.start()
            deadline = time.monotonic() + 10
            while (reply := cb.call("GET", "k").render()).startswith("-UNAVAILABLE"):
                assert time.monotonic() < deadline, reply
                time.sleep(0.1)
            assert reply == "$'before'"
            assert ca.call("SET", "k", "after").render() == "+OK"
            assert cb.call("GET", "k").render() == "$'after'"
            assert late.call("AUTH", secret).render() == "+OK"
            assert http(f"{b.http_url}/healthz")[0] == 200
            for client in (ca, cb, late):
                client.close()


def test_a_revoked_key_is_cut_off_on_every_node(server: RedisServer) -> None:
    """stash keys revoke --backend redis closes the key's connections on A and B alike."""
    a, b = redis_nodes(server.url, "--auth", "keys")
    runner = CliRunner()
    where = ["--backend", "redis", "--redis-url", server.url]
    created = runner.invoke(stash_main, ["keys", "create", "--user", "carol", *where])
    assert created.exit_code == 0, created.output
    secret = created.stdout.strip()
    with a, b:
        clients = [RespClient(a.port), RespClient(b.port)]
        for client in clients:
            assert client.call("AUTH", secret).render() == "+OK"
        listed = runner.invoke(stash_main, ["keys", "list", *where])
        key_id = listed.stdout.splitlines()[1].split()[2]
        revoked = runner.invoke(stash_main, ["keys", "revoke", key_id, *where])
        assert revoked.stdout.strip() == f"revoked {key_id} (user carol)"
        deadline = time.monotonic() + 5
        for client in clients:
            while client.read() is not CLOSED:
                assert time.monotonic() < deadline
        assert RespClient(b.port).call("AUTH", secret).render().startswith("-WRONGPASS")
    missing = runner.invoke(stash_main, ["keys", "revoke", "key_nosuchkey000", *where])
    assert missing.exit_code == 1
    assert f"no key with id 'key_nosuchkey000' in {RedisTarget.parse(server.url).display()}" in (
        missing.stderr
    )


def test_redis_url_comes_from_flags_then_stash_env_then_redis_url(tmp_path: Path) -> None:
    """--redis-url beats STASH_REDIS_URL beats REDIS_URL beats .env beats the default."""
    none = tmp_path / "none"
    dotenv = tmp_path / ".env"
    dotenv.write_text("REDIS_URL=redis://dotenv:1/0\n")
    base = {"backend": "redis"}
    assert load(base, env={}, dotenv_path=none).redis_target.display() == (
        RedisTarget.parse(DEFAULT_REDIS_URL).display()
    )
    assert load(base, env={}, dotenv_path=dotenv).redis_target.host == "dotenv"
    env = {"REDIS_URL": "redis://plain:2/0"}
    assert load(base, env=env, dotenv_path=dotenv).redis_target.host == "plain"
    env["STASH_REDIS_URL"] = "rediss://stash:3/0"
    config = load(base, env=env, dotenv_path=dotenv)
    assert (config.redis_target.host, config.redis_target.tls) == ("stash", True)
    flagged = load({**base, "redis_url": "redis://flag:4", "redis_cluster": True}, env=env)
    assert flagged.redis_target.display() == "redis+cluster://flag:4/0"
    with pytest.raises(ConfigError, match="redis_url: a Redis URL starts with"):
        load({**base, "redis_url": "http://nope"}, env={}, dotenv_path=none)
    with pytest.raises(ConfigError, match="a Redis Cluster has only database 0"):
        load({**base, "redis_url": "redis://h:4/1", "redis_cluster": True}, env={})


def test_an_unreachable_redis_stops_the_start_with_the_reason() -> None:
    """stashd --backend redis exits 1 naming the Redis it could not reach."""
    port = free_port()
    daemon = StashDaemon("--backend", "redis", "--redis-url", f"redis://127.0.0.1:{port}/0")
    with pytest.raises(
        RuntimeError, match=f"cannot connect to Redis at redis://127.0.0.1:{port}/0"
    ):
        daemon.__enter__()
    daemon.stop()


def test_a_node_on_a_redis_cluster_serves_every_command(
    redis_cluster: RedisClusterServers,
) -> None:
    """Two daemons on a Redis Cluster: many namespaces, spread over the masters' slots."""
    url = redis_cluster.url
    redis_cluster.flush()
    a, b = (StashDaemon("--backend", "redis", "--redis-url", url) for _ in range(2))
    with a, b:
        ca, cb = RespClient(a.port), RespClient(b.port)
        for i in range(20):
            assert ca.call("AUTH", f"user-{i}").render() == "+OK"
            assert ca.call("MSET", "x", "1", "y", "2").render() == "+OK"
            assert ca.call("INCR", "x").render() == ":2"
        assert cb.call("AUTH", "user-7").render() == "+OK"
        assert sorted(cb.call("KEYS", "*").render()[1:-1].split(", ")) == ["$'x'", "$'y'"]
        assert cb.call("DBSIZE").render() == ":2"
        assert cb.call("FLUSHDB").render() == "+OK"
        assert cb.call("DBSIZE").render() == ":0"
        assert ca.call("AUTH", "user-8").render() == "+OK"
        assert ca.call("GET", "x").render() == "$'2'"
        ca.close()
        cb.close()


def test_pipelined_auth_and_rate_decisions_keep_replies_in_order(server: RedisServer) -> None:
    """One write holding AUTHs and commands of two users: every reply in order, each rate
    decision for the right user, and AUTH queued in MULTI refused (EXEC is one step)."""
    (node,) = redis_nodes(server.url, "--auth", "keys", count=1)
    first, second = key_for(server.url, "free"), key_for(server.url, "enterprise")
    with node:
        client = RespClient(node.port)
        script: list[tuple[str, ...]] = [("AUTH", first), ("SET", "a", "1")]
        script += [("GET", "a")] * 12
        script += [("AUTH", second), ("GET", "a"), ("SET", "a", "2"), ("GET", "a")]
        script += [("MULTI",), ("AUTH", first), ("GET", "a"), ("EXEC",)]
        for command in script:
            client.send(*command)
        replies = [client.read().render() for _ in script]
        assert replies[:2] == ["+OK", "+OK"]
        assert replies[2:11] == ["$'1'"] * 9  # burst 10: AUTH is free, SET and 9 GETs fit
        assert all(r.startswith("-RATELIMIT rate limit exceeded") for r in replies[11:14])
        assert replies[14:18] == ["+OK", "(nil)", "+OK", "$'2'"]  # the other user's namespace
        assert replies[18:21] == ["+OK", "+QUEUED", "+QUEUED"]
        assert replies[21] == (
            "[-ERR AUTH with a key cannot run inside MULTI when keys are checked in Redis; "
            "send it before MULTI, $'2']"
        )
        client.close()
