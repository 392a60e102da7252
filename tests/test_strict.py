"""Strict mode over RESP: registered keys, tiers, limits on the wire, and the guards.

The cases Wall, Expiry, Bloat, Liar, Flood, Key rotation and Revocation, plus the rules
around them (NOAUTH, WRONGPASS, failed-AUTH throttle, auth timeout, and no plaintext key
in the database or the logs). Every test runs against a real daemon process; keys are
created in its database file by the library or the CLI, as an operator would.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner
from redis.backoff import NoBackoff
from redis.retry import Retry

from stashd.cli import stash_main
from stashd.registry import SQLiteRegistry
from stashd.tenancy import issue_key, new_key
from tests.support.resp_client import CLOSED, Reply, RespClient
from tests.support.servers import RedisServer, StashDaemon

MIB = 1024 * 1024
WRONGPASS = "-WRONGPASS invalid username-password pair or user is disabled."
NOAUTH = "-NOAUTH Authentication required."


class Strict:
    """A strict-mode daemon and the database file holding its keys."""

    def __init__(self, daemon: StashDaemon, db: Path) -> None:
        self.daemon = daemon
        self.db = db
        self.port = daemon.port

    def key(self, tier: str = "enterprise", user: str | None = None) -> tuple[str, str, str]:
        """A new key (secret, key id, user) for ``user`` (a fresh one by default)."""
        return _key(self.db, tier, user)

    def client(self, secret: str | None = None, source: str | None = None) -> RespClient:
        """A raw connection, authenticated with ``secret`` when given."""
        c = RespClient(self.port, source=source)
        if secret is not None:
            assert c.call("AUTH", secret).render() == "+OK"
        return c


def _key(db: Path, tier: str = "enterprise", user: str | None = None) -> tuple[str, str, str]:
    """Register a key in ``db`` as ``stash keys create`` would: (secret, key id, user)."""
    user = user or f"u{uuid.uuid4().hex[:12]}"
    registry = SQLiteRegistry(db)
    try:
        issued = issue_key(registry, user, tier)
    finally:
        registry.close()
    return issued.secret, issued.record.key_id, user


def _revoke(db: Path, key_id: str) -> None:
    registry = SQLiteRegistry(db)
    try:
        registry.revoke(key_id, time.time_ns() // 1_000_000)
    finally:
        registry.close()


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Strict]:
    """One strict daemon for the module; each test makes its own users and keys."""
    db = tmp_path_factory.mktemp("strict") / "stash.db"
    SQLiteRegistry(db).close()
    with StashDaemon("--auth", "keys", "--db", str(db), "--auth-timeout", "2") as daemon:
        yield Strict(daemon, db)


def _retry_ms(reply: Reply) -> int:
    match = re.fullmatch(r"-RATELIMIT rate limit exceeded, retry after (\d+) ms", reply.render())
    assert match, reply.render()
    return int(match.group(1))


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    pytest.skip(f"/proc/{pid}/status has no VmHWM: memory cannot be measured here")


def _reset_peak_rss(pid: int) -> None:
    """Start the peak over from the current RSS, so earlier tests' peaks cannot hide growth."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pytest.skip(f"/proc/{pid}/clear_refs is not writable: the peak RSS cannot be reset")


# -- before AUTH ----------------------------------------------------------------------------


def _request(*args: str | bytes) -> bytes:
    parts = [a if isinstance(a, bytes) else a.encode() for a in args]
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%b\r\n" % (len(p), p) for p in parts)


# Requests sent before AUTH, each on a fresh connection followed by QUIT (whose +OK ends
# the exchange unless the request closed the connection first). Over-limit requests are
# sent as headers only: the refusal comes at the header, and no unread bytes are left
# to turn the close into a reset.
PREAUTH = [
    _request("PING"),
    _request("GET", "k"),
    _request("SET", "k", "v"),
    _request("FOO", "a"),
    _request("GET"),
    _request("AUTH"),
    _request("AUTH", "a", "b", "c"),
    _request("HELLO", "3"),
    _request("HELLO"),
    _request("HELLO", "4"),
    _request("QUIT"),
    _request("RESET"),
    _request("CLIENT", "SETNAME", "x"),
    _request("MULTI"),
    _request("SELECT", "0"),
    _request("COMMAND", "COUNT"),
    b"PING\r\n",
    _request("PING") + _request("GET", "k"),
    _request(*["a"] * 10),
    b"*11\r\n",
    b"*2\r\n$4\r\nECHO\r\n$16385\r\n",
    _request("ECHO", b"x" * 16384),
]


def _exchange(port: int, data: bytes) -> list[str]:
    c = RespClient(port)
    c.send_raw(data + _request("QUIT"))
    replies: list[str] = []
    while (reply := c.read()) is not CLOSED:
        replies.append(reply.render())
    c.close()
    return replies


def test_before_auth_replies_match_redis_with_requirepass(strict: Strict) -> None:
    """NOAUTH for all but AUTH/HELLO/QUIT/RESET, and Redis's pre-auth caps, byte for byte."""
    with RedisServer("--requirepass", new_key()) as real:
        for data in PREAUTH:
            assert _exchange(strict.port, data) == _exchange(real.port, data), data[:40]


def test_wrongpass_is_byte_identical_for_every_bad_key(strict: Strict) -> None:
    """Unknown, revoked, malformed, empty and misnamed keys all get Redis's WRONGPASS bytes."""
    secret, _, user = strict.key()
    revoked, revoked_id, _ = strict.key()
    _revoke(strict.db, revoked_id)
    bad = [
        ("AUTH", new_key()),  # well formed, unknown
        ("AUTH", revoked),
        ("AUTH", secret[:-1]),  # malformed: no lookup
        ("AUTH", secret[:-1] + ("A" if secret[-1] != "A" else "B")),  # checksum
        ("AUTH", ""),
        ("AUTH", "someone-else", secret),  # another user's name
        ("HELLO", "3", "AUTH", "default", revoked),
    ]
    c = strict.client(source="127.0.0.2")
    replies = {c.call(*args) for args in bad}
    assert replies == {Reply("-", WRONGPASS[1:].encode())}  # same type, same bytes
    assert c.call("GET", "k").render() == NOAUTH  # nothing got through
    assert c.call("AUTH", user, secret).render() == "+OK"
    assert c.call("AUTH", "default", secret).render() == "+OK"


def test_redis_py_and_redis_cli_work_with_a_registered_key(strict: Strict) -> None:
    """redis-py (RESP3 and RESP2, password=) and redis-cli -a authenticate with a key."""
    secret, _, _ = strict.key("pro")
    for protocol in (3, 2):
        r = redis.Redis(port=strict.port, password=secret, protocol=protocol)
        assert r.set("plan", '{"step":1}')
        assert r.get("plan") == b'{"step":1}'
        assert r.ttl("plan") in (86399, 86400)  # pro's default TTL
        r.close()
    no_retry = Retry(NoBackoff(), 0)  # redis-py retries connection errors by default
    with pytest.raises(redis.AuthenticationError, match="HELLO must be called"):
        redis.Redis(port=strict.port, retry=no_retry).get("plan")
    cli = shutil.which("redis-cli")
    if cli is None:
        pytest.skip("redis-cli is not on PATH: the redis-cli half of this test cannot run")
    done = subprocess.run(
        [cli, "-p", str(strict.port), "-a", secret, "--no-auth-warning", "GET", "plan"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert done.stdout.strip() == '{"step":1}'


# -- Wall -------------------------------------------------------------------------------------


def test_wall_one_user_cannot_reach_anothers_data(strict: Strict) -> None:
    """Wall: bob cannot read, list, count, rename, delete or flush alice's data."""
    alice = strict.client(strict.key()[0])
    bob = strict.client(strict.key()[0])
    assert alice.call("SET", "secret", "alice's").render() == "+OK"
    mid = alice.call("STASH", '{"plan":"alice"}').value.decode()
    for args, expected in [
        (("GET", "secret"), "(nil)"),
        (("MGET", "secret", "other"), "[(nil), (nil)]"),
        (("EXISTS", "secret"), ":0"),
        (("TTL", "secret"), ":-2"),
        (("KEYS", "*"), "[]"),
        (("SCAN", "0", "COUNT", "1000"), "[$'0', []]"),
        (("DBSIZE",), ":0"),
        (("RECALL", mid), "(nil)"),
        (("RENAME", "secret", "mine"), "-ERR no such key"),
        (("DEL", "secret"), ":0"),
        (("FORGET", mid), ":0"),
        (("UPDATE", mid, "DATA", "{}"), "(nil)"),
        (("EXPIRE", "secret", "1"), ":0"),
        (("GETDEL", "secret"), "(nil)"),
        (("FLUSHALL",), "+OK"),
        (("FLUSHDB",), "+OK"),
    ]:
        assert bob.call(*args).render() == expected, args
    assert alice.call("GET", "secret").render() == '$"alice\'s"'
    assert alice.call("RECALL", mid).render() == '$\'{"plan":"alice"}\''
    assert alice.call("DBSIZE").render() == ":2"


# -- Expiry -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tier", "default_ttl", "max_ttl"),
    [("free", 3600, 3600), ("pro", 86400, 86400), ("enterprise", 86400, 604800)],
)
def test_expiry_ttl_caps_per_tier(
    strict: Strict, tier: str, default_ttl: int, max_ttl: int
) -> None:
    """Expiry: each tier's default TTL applies, its maximum is accepted, one more is BADTTL."""
    c = strict.client(strict.key(tier)[0])
    over = f"-BADTTL ttl {max_ttl + 1} seconds exceeds the maximum of {max_ttl} seconds"
    assert c.call("SET", "k", "v").render() == "+OK"
    assert c.call("TTL", "k").render() in (f":{default_ttl}", f":{default_ttl - 1}")
    assert c.call("SET", "k", "v", "EX", max_ttl).render() == "+OK"
    assert c.call("SET", "k", "w", "EX", max_ttl + 1).render() == over
    assert c.call("EXPIRE", "k", max_ttl + 1).render() == over
    assert c.call("STASH", "{}", "EX", max_ttl + 1).render() == over
    assert c.call("GET", "k").render() == "$'v'"  # the refused writes changed nothing


def test_payload_caps_per_tier(strict: Strict) -> None:
    """Free takes 1 MiB and refuses 1 MiB + 1 early (pre-read); pro takes it.

    APPEND past the cap is refused by the same rule (tests/test_wire.py); here the 1 MiB
    write costs 65 units of free's burst of 10 (SPEC "Rate limits"), so the next command
    waits 56 seconds for it.
    """
    free = strict.client(strict.key("free")[0])
    assert free.call("SET", "k", b"x" * MIB).render() == "+OK"
    assert free.call("SET", "k", b"x" * (MIB + 1)).render() == (
        "-TOOLARGE value is 1048577 bytes, the limit is 1048576 bytes"
    )
    assert 55_000 < _retry_ms(free.call("STRLEN", "k")) <= 56_000
    pro = strict.client(strict.key("pro")[0])
    assert pro.call("SET", "k", b"x" * (MIB + 1)).render() == "+OK"


# -- Bloat ------------------------------------------------------------------------------------


def test_bloat_oversized_payloads_are_refused_early_and_memory_stays_flat(strict: Strict) -> None:
    """Bloat: 200 MiB announced to a 1 MiB user is skipped unbuffered; the peak RSS barely moves."""
    secret, _, _ = strict.key("free")
    c = strict.client(secret)
    bystander = strict.client(strict.key()[0])
    pid = strict.daemon.pid
    assert c.call("PING").render() == "+PONG"
    _reset_peak_rss(pid)
    before = _peak_rss_kib(pid)
    chunk = b"z" * MIB
    sizes = (200 * MIB, 8 * MIB, 8 * MIB)
    for n, size in enumerate(sizes):
        c.send_raw(b"*3\r\n$3\r\nSET\r\n$6\r\nbloat%d\r\n$%d\r\n" % (n, size))
        for _ in range(size // MIB):
            c.send_raw(chunk)
        c.send_raw(b"\r\n")
    for size in sizes:
        assert c.read().render() == f"-TOOLARGE value is {size} bytes, the limit is {MIB} bytes"
    grew = _peak_rss_kib(pid) - before
    assert grew < 16 * 1024, f"peak RSS grew by {grew} KiB while 216 MiB were refused"
    assert c.call("EXISTS", "bloat0", "bloat1", "bloat2").render() == ":0"
    assert c.call("SET", "small", "ok").render() == "+OK"  # the connection lives on
    assert bystander.call("PING").render() == "+PONG"


# -- Liar -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lie",
    [
        b"*3\r\n$3\r\nSET\r\n$4\r\nliar\r\n$3\r\nabcdef\r\n",  # more bytes than declared
        b"*3\r\n$3\r\nSET\r\n$4\r\nliar\r\n$10\r\nabc\r\n*1\r\n$4\r\nPING\r\n",  # fewer
        b"*3\r\n$3\r\nSET\r\n$4\r\nliar\r\n$2\r\nab",  # the lie arrives in a later read
    ],
)
def test_liar_mismatched_lengths_close_the_connection_and_store_nothing(
    strict: Strict, lie: bytes
) -> None:
    """Liar: a bulk whose bytes do not match its length is a protocol error; nothing is stored."""
    secret, _, _ = strict.key()
    c = strict.client(secret)
    c.send_raw(_request("SET", "honest", "1") + lie)
    if lie.endswith(b"ab"):
        time.sleep(0.05)
        c.send_raw(b"XY" + _request("PING"))
    assert c.read().render() == "+OK"  # the request before the lie ran
    assert c.read().render().startswith("-ERR Protocol error:")
    assert c.read() is CLOSED
    other = strict.client(secret)
    assert other.call("EXISTS", "liar").render() == ":0"
    assert other.call("GET", "honest").render() == "$'1'"


# -- Flood ------------------------------------------------------------------------------------


def test_flood_burst_then_ratelimit_then_recovery_after_the_advertised_wait(
    strict: Strict,
) -> None:
    """Flood: free's burst of 10 passes (pipelined), then RATELIMIT, then one more after the wait."""
    secret, _, _ = strict.key("free")
    c = strict.client(secret)
    c.send_raw(_request("PING") * 10 + _request("SET", "flood", "1") + _request("GET", "flood"))
    replies = [c.read() for _ in range(12)]
    assert [r.render() for r in replies[:10]] == ["+PONG"] * 10
    wait = _retry_ms(replies[10])
    assert 900 <= wait <= 1000  # 60/min: one command a second
    _retry_ms(replies[11])
    started = time.monotonic()
    assert c.call("CLIENT", "SETNAME", "flooder").render() == "+OK"  # not metered
    other_connection = strict.client(secret)  # the limit is per user, not per connection
    _retry_ms(other_connection.call("PING"))
    assert strict.client(strict.key("free")[0]).call("PING").render() == "+PONG"
    # The handshake (HELLO AUTH, CLIENT SETINFO) still works; the command does not.
    with (
        redis.Redis(port=strict.port, password=secret) as r,
        pytest.raises(redis.ResponseError, match="RATELIMIT"),
    ):
        r.ping()
    time.sleep(max(0.0, wait / 1000 - (time.monotonic() - started)))
    assert c.call("EXISTS", "flood").render() == ":0"  # the refused SET never ran
    c.send_raw(_request("PING") * 5)  # the recovered budget is soon spent again
    assert any(c.read().render().startswith("-RATELIMIT") for _ in range(5))


def test_a_refused_command_inside_multi_aborts_the_transaction(strict: Strict) -> None:
    """A command refused by the rate limit while queueing makes EXEC abort, as queueing errors do.

    Queued commands cost when queued; MULTI and EXEC cost nothing of their own, so free's
    burst of 10 queues ten SETs and refuses the eleventh.
    """
    c = strict.client(strict.key("free")[0])
    c.send_raw(_request("MULTI") + _request("SET", "t", "1") * 11)
    replies = [c.read() for _ in range(12)]
    assert replies[0].render() == "+OK"
    assert [r.render() for r in replies[1:11]] == ["+QUEUED"] * 10
    time.sleep(_retry_ms(replies[11]) / 1000)
    assert c.call("EXEC").render() == (
        "-EXECABORT Transaction discarded because of previous errors."
    )
    time.sleep(1.0)
    assert c.call("EXISTS", "t").render() == ":0"


# -- Key rotation and revocation ----------------------------------------------------------


def test_key_rotation_keeps_the_users_data(strict: Strict) -> None:
    """Key rotation: a new key of the same user sees the data; revoking the old one keeps it."""
    old, old_id, user = strict.key("pro")
    c = strict.client(old)
    assert c.call("SET", "context", "kept").render() == "+OK"
    mid = c.call("STASH", '{"step":3}').value.decode()
    new, _, _ = strict.key("pro", user)
    runner = CliRunner()
    result = runner.invoke(stash_main, ["keys", "revoke", old_id, "--db", str(strict.db)])
    assert result.exit_code == 0, result.output
    fresh = strict.client(new)
    assert fresh.call("GET", "context").render() == "$'kept'"
    assert fresh.call("RECALL", mid).render() == "$'{\"step\":3}'"
    assert RespClient(strict.port, source="127.0.0.5").call("AUTH", old).render() == WRONGPASS


def test_revocation_refuses_the_next_auth_and_closes_open_connections(strict: Strict) -> None:
    """Revocation: the next AUTH gets WRONGPASS and connections using the key are closed."""
    secret, key_id, user = strict.key()
    other, _, _ = strict.key(user=user)
    using = strict.client(secret)
    sibling = strict.client(other)
    assert using.call("SET", "k", "v").render() == "+OK"
    result = CliRunner().invoke(stash_main, ["keys", "revoke", key_id, "--db", str(strict.db)])
    assert result.exit_code == 0, result.output
    assert RespClient(strict.port, source="127.0.0.6").call("AUTH", secret).render() == WRONGPASS
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        reply = using.call("PING")
        if reply is CLOSED:
            break
        assert reply.render() == "+PONG"
        time.sleep(0.1)
    assert reply is CLOSED, "a connection of a revoked key must be closed within seconds"
    assert sibling.call("GET", "k").render() == "$'v'"  # the user's other key is untouched


# -- guards ---------------------------------------------------------------------------------


def test_failed_auths_are_throttled_per_address(strict: Strict) -> None:
    """Ten failures are answered; then even a good key is refused unchecked and disconnected."""
    secret, _, _ = strict.key()
    c = strict.client(source="127.0.0.3")
    for _ in range(10):
        assert c.call("AUTH", new_key()).render() == WRONGPASS
    assert c.call("PING").render() == NOAUTH  # still connected
    assert c.call("AUTH", secret).render() == WRONGPASS
    assert c.read() is CLOSED
    again = strict.client(source="127.0.0.3")
    assert again.call("HELLO", "3", "AUTH", "default", secret).render() == WRONGPASS
    assert again.read() is CLOSED
    assert strict.client(source="127.0.0.4").call("AUTH", secret).render() == "+OK"


def test_unauthenticated_connections_are_closed_after_the_auth_timeout(strict: Strict) -> None:
    """A connection that has not authenticated within --auth-timeout (2 s) is closed."""
    silent = strict.client()
    chatty = strict.client()
    authed = strict.client(strict.key()[0])
    start = time.monotonic()
    while (reply := chatty.call("PING")) is not CLOSED:  # NOAUTH replies do not extend it
        assert reply.render() == NOAUTH
        assert time.monotonic() - start < 6, "the auth timeout did not close the connection"
        time.sleep(0.2)
    assert time.monotonic() - start >= 1.5
    assert silent.read() is CLOSED
    assert authed.call("PING").render() == "+PONG"


def test_no_plaintext_key_in_the_database_or_the_logs(tmp_path: Path) -> None:
    """Keys appear in no database file and no log line, whatever happens to them."""
    db = tmp_path / "stash.db"
    runner = CliRunner()
    created = runner.invoke(stash_main, ["keys", "create", "--user", "alice", "--db", str(db)])
    assert created.exit_code == 0
    secret = created.stdout.strip()
    revoked, revoked_id, _ = _key(db, user="alice")
    daemon = StashDaemon(
        "--auth", "keys", "--db", str(db), "--log-format", "json", log_level="debug"
    )
    with daemon:
        _revoke(db, revoked_id)
        r = redis.Redis(port=daemon.port, password=secret)
        r.set("k", "v")
        r.execute_command("STASH", '{"a":1}')
        r.close()
        for key in (revoked, secret[:-1], secret + "x", new_key()):
            assert RespClient(daemon.port, source="127.0.0.8").call("AUTH", key).render() == (
                WRONGPASS
            )
        daemon.stop()
    events = [json.loads(line) for line in daemon.stderr.splitlines() if line.startswith("{")]
    assert {"key_refused", "auth_failed", "key_set"} <= {e["event"] for e in events}
    for plaintext in (secret, revoked, secret[8:40], revoked[8:40]):
        assert plaintext not in daemon.stderr
        for file in tmp_path.iterdir():
            assert plaintext.encode() not in file.read_bytes(), file.name
    listed = runner.invoke(stash_main, ["keys", "list", "--db", str(db)])
    assert secret not in listed.output
    assert secret[8:40] not in listed.output


def test_info_answers_for_the_principal_it_was_sent_under(strict: Strict) -> None:
    """INFO then RESET in one write: INFO's keyspace is the key's, RESET's anonymity after."""
    secret, _, _ = _key(strict.db)
    c = RespClient(strict.daemon.port)
    assert c.call("AUTH", secret).render() == "+OK"
    assert c.call("SET", "k", "v").render() == "+OK"
    c.send_raw(b"*2\r\n$4\r\nINFO\r\n$8\r\nkeyspace\r\n*1\r\n$5\r\nRESET\r\n*1\r\n$4\r\nPING\r\n")
    info = c.read().value
    assert info.startswith(b"# Keyspace\r\ndb0:keys=1,"), info
    assert c.read().render() == "+RESET"
    assert c.read().render().startswith("-NOAUTH")
