"""Keys, the registry, the strict keyring, the failed-AUTH throttle, tiers and their config."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stashd.config import ConfigError, load
from stashd.errors import StoreUnavailable
from stashd.ratelimit import Rate
from stashd.redistarget import RedisTarget
from stashd.registry import Registry, RegistryError, SQLiteRegistry
from stashd.registry_redis import RedisRegistry
from stashd.tenancy import (
    AUTH_FAILURES,
    BASE62,
    KEY_LENGTH,
    AuthThrottle,
    OpenKeyring,
    StrictKeyring,
    check_user_name,
    issue_key,
    key_digest,
    key_from,
    namespace_of,
    namespace_of_user,
    new_key,
    well_formed,
)
from stashd.tiers import DEFAULTS, TierError, duration_text, render, resolve, size_text
from stashd.types import Limits, Principal, Quota

MIB = 1024 * 1024
TIERS = resolve()


class Clock:
    def __init__(self) -> None:
        self.now = 5_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "redis", "redis-cluster"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    """Each registry the daemon can use: the SQLite file's, Redis's, a Redis Cluster's."""
    reg: Registry
    if request.param == "sqlite":
        reg = SQLiteRegistry(tmp_path / "keys.db")
    else:
        server = request.getfixturevalue(
            "redis_cluster" if request.param == "redis-cluster" else "redis_store"
        )
        server.flush()
        reg = RedisRegistry(RedisTarget.parse(server.url))
    yield reg
    reg.close()


# -- key format ---------------------------------------------------------------------------


def test_new_keys_have_the_scannable_shape() -> None:
    """sk_live_ + 32 base62 + 6 checksum characters, all different, all well formed."""
    keys = {new_key() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert len(key) == KEY_LENGTH == 46
        assert key.startswith("sk_live_")
        assert set(key[8:]) <= set(BASE62)
        assert well_formed(key.encode())


@given(
    random_part=st.text(BASE62, min_size=32, max_size=32),
    pos=st.integers(8, KEY_LENGTH - 1),
    shift=st.integers(1, 61),
)
def test_any_single_character_change_breaks_the_checksum(
    random_part: str, pos: int, shift: int
) -> None:
    """A typo anywhere after the prefix is caught by the checksum, before any lookup."""
    key = bytearray(key_from(random_part).encode())
    assert well_formed(bytes(key))
    key[pos] = ord(BASE62[(BASE62.index(chr(key[pos])) + shift) % 62])
    assert not well_formed(bytes(key))


@pytest.mark.parametrize(
    "key",
    [b"", b"sk_live_", b"sk_test_" + b"A" * 38, b"x" * 46, b"sk_live_" + b"!" * 38],
)
def test_malformed_keys(key: bytes) -> None:
    """Wrong prefix, length or alphabet are malformed."""
    assert not well_formed(key)
    assert not well_formed(new_key().encode() + b"A")


def test_namespaces_of_users_never_meet_open_mode_ones() -> None:
    """A user's namespace has a colon; open-mode ones are hex digests and 'default'."""
    assert namespace_of_user("alice") == "user:alice"
    assert ":" not in namespace_of(b"any key")
    with pytest.raises(ValueError, match="got 'bad name'"):
        check_user_name("bad name")
    with pytest.raises(ValueError, match="1 to 64 characters"):
        check_user_name("x" * 65)


def test_open_mode_keeps_principals_of_recent_keys_within_a_bound() -> None:
    """The same key gets the same principal; new keys past the bound start the table over."""
    limits = Limits(max_payload=100, default_ttl_ms=1000, max_ttl_ms=2000)
    keyring = OpenKeyring(limits)
    alice = keyring.authenticate(None, b"alice")
    assert alice == Principal(namespace_of(b"alice"), limits)
    assert keyring.authenticate(None, b"alice") is alice
    assert keyring.authenticate("default", b"alice") is alice
    named = keyring.authenticate("bob", b"alice")
    assert named == Principal(namespace_of(b"alice"), limits, "bob")
    assert keyring.authenticate(None, b"") is None
    for n in range(OpenKeyring.KNOWN_KEYS + 10):
        principal = keyring.authenticate(None, b"key %d" % n)
        assert principal is not None
        assert principal.namespace == namespace_of(b"key %d" % n)
        assert len(keyring._known) <= OpenKeyring.KNOWN_KEYS
    assert keyring.authenticate(None, b"alice") == alice


# -- registry and strict keyring ----------------------------------------------------------


def test_issued_keys_authenticate_to_the_users_namespace_and_tier(
    registry: Registry,
) -> None:
    """Two keys of one user share its namespace and tier; another user is elsewhere."""
    keyring = StrictKeyring(registry, TIERS)
    first = issue_key(registry, "alice", "pro")
    second = issue_key(registry, "alice")
    other = issue_key(registry, "bob")
    assert first.record.tier == second.record.tier == "pro"
    assert other.record.tier == "free"
    a1 = keyring.authenticate(None, first.secret.encode())
    a2 = keyring.authenticate("alice", second.secret.encode())
    b = keyring.authenticate("default", other.secret.encode())
    assert a1 is not None
    assert a2 is not None
    assert b is not None
    assert a1.namespace == a2.namespace == "user:alice" != b.namespace
    assert a1.limits == TIERS["pro"]
    assert b.limits == TIERS["free"]
    assert a1.key_id == first.record.key_id != a2.key_id
    assert keyring.anonymous() is None


def test_refusals_unknown_revoked_malformed_wrong_user(registry: Registry) -> None:
    """Every kind of bad credential resolves to None (the door answers WRONGPASS)."""
    keyring = StrictKeyring(registry, TIERS)
    issued = issue_key(registry, "alice")
    key = issued.secret.encode()
    assert keyring.authenticate("bob", key) is None  # someone else's name
    assert keyring.authenticate(None, new_key().encode()) is None  # unknown
    assert keyring.authenticate(None, key[:-1]) is None  # malformed
    assert registry.revoke(issued.record.key_id, 1) is not None
    assert keyring.authenticate(None, key) is None  # revoked
    assert registry.revoke("key_nosuchkey000", 1) is None


def test_a_tier_the_daemon_does_not_know_is_refused(registry: Registry) -> None:
    """A row edited to a strange tier is refused rather than given made-up limits."""
    issued = issue_key(registry, "alice")
    keyring = StrictKeyring(registry, {"pro": TIERS["pro"]})
    assert keyring.authenticate(None, issued.secret.encode()) is None


def test_giving_a_tier_moves_the_user(registry: Registry) -> None:
    """keys create --tier on an existing user changes the tier of all its keys."""
    first = issue_key(registry, "alice")
    moved = issue_key(registry, "alice", "enterprise")
    assert moved.previous_tier == "free"
    assert {r.tier for r in registry.records()} == {"enterprise"}
    assert issue_key(registry, "alice", "enterprise").previous_tier is None
    assert first.record.key_id in {r.key_id for r in registry.records()}


def test_revocation_is_reported_once_with_overlap(registry: Registry) -> None:
    """revoked() lists keys revoked lately; a second revoke keeps the first time."""
    keyring = StrictKeyring(registry, TIERS)
    issued = issue_key(registry, "alice")
    assert keyring.revoked() == set()
    first = registry.revoke(issued.record.key_id, 10**13)
    again = registry.revoke(issued.record.key_id, 10**13 + 5)
    assert first is not None
    assert again is not None
    assert again.revoked_at_ms == first.revoked_at_ms == 10**13
    assert keyring.revoked() == {issued.record.key_id}


def test_an_unreadable_registry_is_unavailable_not_wrongpass(tmp_path: Path) -> None:
    """When the registry cannot be read, AUTH says the store is unavailable (retry may work)."""
    path = tmp_path / "keys.db"
    registry = SQLiteRegistry(path)
    issued = issue_key(registry, "alice")
    keyring = StrictKeyring(registry, TIERS)
    other = sqlite3.connect(path)
    other.execute("DROP TABLE api_keys")
    other.commit()
    other.close()
    with pytest.raises(StoreUnavailable, match="store unavailable: key registry"):
        keyring.authenticate(None, issued.secret.encode())
    with pytest.raises(RegistryError, match="cannot read the key registry"):
        keyring.revoked()
    with pytest.raises(RegistryError, match="cannot read the key registry"):
        registry.records()
    registry.close()


def test_the_registry_stores_digests_only(tmp_path: Path) -> None:
    """The plaintext key is in no row and nowhere in the database files."""
    path = tmp_path / "keys.db"
    registry = SQLiteRegistry(path)
    secrets = [issue_key(registry, f"user{i}").secret for i in range(5)]
    rows = sqlite3.connect(path).execute("SELECT * FROM api_keys").fetchall()
    registry.close()
    for secret in secrets:
        assert not any(secret.encode() in str(row).encode() for row in rows)
        assert key_digest(secret.encode()) in {row[1] for row in rows}
        for file in tmp_path.iterdir():
            assert secret.encode() not in file.read_bytes()


def test_the_registry_leaves_other_tables_alone(tmp_path: Path) -> None:
    """A file that already holds another module's table keeps it; reopening is idempotent."""
    path = tmp_path / "shared.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE entries (k TEXT)")
    db.execute("INSERT INTO entries VALUES ('x')")
    db.commit()
    SQLiteRegistry(path).close()
    registry = SQLiteRegistry(path)
    issue_key(registry, "alice")
    registry.close()
    assert db.execute("SELECT k FROM entries").fetchall() == [("x",)]
    db.close()


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    """Opening garbage names the file and the cause."""
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(RegistryError, match=r"junk\.db"):
        SQLiteRegistry(path)
    with pytest.raises(RegistryError, match="cannot open the key registry"):
        SQLiteRegistry(tmp_path / "junk.db" / "below-a-file.db")


# -- failed authentication ----------------------------------------------------------------


def test_throttle_allows_ten_failures_then_one_per_six_seconds() -> None:
    """Ten failures pass, then the address is blocked until the next one would fit."""
    clock = Clock()
    throttle = AuthThrottle(AUTH_FAILURES, clock)
    for _ in range(10):
        assert not throttle.blocked("10.0.0.1")
        throttle.failed("10.0.0.1")
    assert throttle.blocked("10.0.0.1")
    assert not throttle.blocked("10.0.0.2")  # per address
    clock.now += 5_999
    assert throttle.blocked("10.0.0.1")
    clock.now += 1
    assert not throttle.blocked("10.0.0.1")
    throttle.failed("10.0.0.1")  # the one that fitted uses the allowance up again
    assert throttle.blocked("10.0.0.1")
    clock.now += 60_000
    for _ in range(10):  # a quiet minute refills the whole allowance
        assert not throttle.blocked("10.0.0.1")
        throttle.failed("10.0.0.1")


def test_throttle_table_stays_bounded() -> None:
    """Blocks of many one-off addresses do not pile up."""
    clock = Clock()
    throttle = AuthThrottle(Rate(1, 1, 1), clock)
    for i in range(AuthThrottle.PRUNE_AT + 50):
        throttle.failed(f"a{i}")
        clock.now += 2000
    assert len(throttle._blocked_until) < AuthThrottle.PRUNE_AT


# -- tiers ----------------------------------------------------------------------------------


def test_default_tiers_follow_the_published_table() -> None:
    """free 1 MiB/1 h/1 h/60 per min burst 10/10,000 keys/64 MiB; pro; enterprise unlimited."""
    free_quota = Quota(10_000, 64 * MIB)
    pro_quota = Quota(1_000_000, 4096 * MIB)
    assert TIERS["free"] == Limits(MIB, 3_600_000, 3_600_000, Rate(60, 60, 10), free_quota)
    assert TIERS["pro"] == Limits(50 * MIB, 86_400_000, 86_400_000, Rate(300, 60, 50), pro_quota)
    assert TIERS["enterprise"] == Limits(500 * MIB, 86_400_000, 7 * 86_400_000, None)
    assert render(TIERS).splitlines() == [
        "tier        max payload  default ttl  max ttl  rate              max keys   max bytes",
        "free        1 MiB        1 h          1 h      60/min burst 10   10,000     64 MiB",
        "pro         50 MiB       24 h         24 h     300/min burst 50  1,000,000  4 GiB",
        "enterprise  500 MiB      24 h         7 d      unlimited         unlimited  unlimited",
    ]


def test_env_beats_file_beats_defaults() -> None:
    """Setting by setting: the TOML file over the defaults, STASH_TIER_* over the file."""
    text = '[pro]\nmax_ttl = 172800\ndefault_ttl = 7200\nrate = "10/s"\n[enterprise]\nrate = "1000/min"\n'
    env = {"STASH_TIER_PRO_MAX_TTL": "259200", "STASH_TIER_FREE_RATE": "unlimited", "PATH": "/x"}
    table = resolve(text, env)
    assert table["pro"] == Limits(
        50 * MIB, 7_200_000, 259_200_000, Rate(10, 1, 50), Quota(1_000_000, 4096 * MIB)
    )
    assert table["free"].rate is None
    assert table["enterprise"].rate == Rate(1000, 60, 1000)  # burst: one period's worth


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("[gold]\nrate='1/s'\n", {}, "unknown tier 'gold'"),
        ("[free]\nspeed=1\n", {}, "unknown setting 'speed' in \\[free\\]"),
        ("free = 3\n", {}, "\\[free\\] must be a table, got 3"),
        ("[free\n", {}, "is not valid TOML"),
        ("[free]\nmax_ttl = 'long'\n", {}, "tiers file \\[free\\] max_ttl must be an integer"),
        ("[free]\nmax_ttl = true\n", {}, "must be an integer, got True"),
        ("[free]\nrate = 5\n", {}, "must be a string like '60/min', got 5"),
        ("", {"STASH_TIER_FREE_MAX_TTL": "0"}, "STASH_TIER_FREE_MAX_TTL must be at least 1, got 0"),
        ("", {"STASH_TIER_GOLD_RATE": "1/s"}, "unknown variable STASH_TIER_GOLD_RATE"),
        ("", {"STASH_TIER_PRO_RATE": "fast"}, "STASH_TIER_PRO_RATE: rate must look like"),
        ("", {"STASH_TIER_PRO_BURST": "x"}, "STASH_TIER_PRO_BURST must be an integer, got 'x'"),
        ("[free]\nmax_keys = 1.5\n", {}, "max_keys must be an integer or 'unlimited', got 1.5"),
        (
            "",
            {"STASH_TIER_FREE_MAX_KEYS": "0"},
            "MAX_KEYS must be at least 1 or 'unlimited', got 0",
        ),
        ("[pro]\nmax_bytes = 'lots'\n", {}, "tiers file \\[pro\\] max_bytes must be a number of"),
        (
            "",
            {"STASH_TIER_FREE_DEFAULT_TTL": "7200"},
            (
                r"default_ttl \(7200, from STASH_TIER_FREE_DEFAULT_TTL\) must not exceed "
                r"max_ttl \(3600, from default\)"
            ),
        ),
    ],
)
def test_bad_tier_settings_name_the_source_and_value(
    text: str, env: dict[str, str], message: str
) -> None:
    """Each mistake names where it came from and what was given."""
    with pytest.raises(TierError, match=message):
        resolve(text or None, env)


def test_human_units() -> None:
    """Sizes and durations print in their largest exact unit."""
    assert [size_text(n) for n in (1, 1024, 1536, MIB, 3 * 1024 * MIB)] == [
        "1 bytes",
        "1 KiB",
        "1536 bytes",
        "1 MiB",
        "3 GiB",
    ]
    assert [duration_text(ms) for ms in (1000, 90_000, 120_000, 86_400_000, 172_800_000)] == [
        "1 s",
        "90 s",
        "2 min",
        "24 h",
        "2 d",
    ]
    assert set(DEFAULTS) == {"free", "pro", "enterprise"}


# -- config -------------------------------------------------------------------------------


def test_open_mode_rate_and_guards_from_env(tmp_path: Path) -> None:
    """STASH_RATE_LIMIT/STASH_RATE_BURST make open mode's rate; guards read like others."""
    none = tmp_path / "missing.env"
    env = {"STASH_RATE_LIMIT": "600/min", "STASH_RATE_BURST": "20", "STASH_MAX_CLIENTS": "5"}
    config = load(env=env, dotenv_path=none)
    assert config.rate == Rate(600, 60, 20)
    assert config.max_clients == 5
    assert load(env={}, dotenv_path=none).rate is None
    assert load(env={"STASH_RATE_LIMIT": "5/s"}, dotenv_path=none).rate == Rate(5, 1, 5)


def test_tier_overrides_come_from_env_and_dotenv(tmp_path: Path) -> None:
    """STASH_TIER_* in .env apply too, and env beats .env."""
    dotenv = tmp_path / ".env"
    dotenv.write_text("STASH_TIER_PRO_MAX_TTL=172800\nSTASH_TIER_FREE_BURST=3\n")
    config = load(env={"STASH_TIER_PRO_MAX_TTL": "259200"}, dotenv_path=dotenv)
    table = config.tier_table()
    assert table["pro"].max_ttl_ms == 259_200_000
    assert table["free"].rate == Rate(60, 60, 3)


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        ({"rate_limit": "lots"}, {}, "rate_limit: rate must look like 600/min"),
        ({"rate_burst": 5}, {}, r"rate_burst \(5\) needs a rate_limit"),
        ({"rate_burst": -1, "rate_limit": "1/s"}, {}, "rate_burst must not be negative, got -1"),
        ({"max_clients": 0}, {}, "max_clients must be at least 1, got 0"),
        ({"auth_timeout": 0}, {}, "auth_timeout must be at least 1 second, got 0"),
        (
            {"max_query_buffer": 1000, "max_payload_bytes": 1000},
            {},
            (
                r"max_query_buffer \(1000 bytes\) must exceed the largest payload limit "
                r"\(1000 bytes, max_payload_bytes\)"
            ),
        ),
        (
            {"auth": "keys", "max_query_buffer": 100 * MIB},
            {},
            r"\(524288000 bytes, tier enterprise\)",
        ),
        ({"tiers": "/nonexistent/tiers.toml"}, {}, "cannot read the tiers file"),
        ({}, {"STASH_TIER_FREE_RATE": "x"}, "STASH_TIER_FREE_RATE: rate must look like"),
    ],
)
def test_bad_guard_settings_are_refused_at_start(
    tmp_path: Path, flags: dict[str, object], env: dict[str, str], message: str
) -> None:
    """Each refusal names the setting and the value."""
    with pytest.raises(ConfigError, match=message):
        load(flags, env=env, dotenv_path=tmp_path / "missing.env")


def test_strict_mode_may_listen_on_any_address(tmp_path: Path) -> None:
    """Protected mode keeps open mode on loopback; --auth keys may bind a public address."""
    none = tmp_path / "missing.env"
    load({"auth": "keys", "host": "0.0.0.0"}, env={}, dotenv_path=none).check_exposure()  # noqa: S104
    with pytest.raises(ConfigError, match=r"refusing to listen on 0\.0\.0\.0"):
        load({"host": "0.0.0.0"}, env={}, dotenv_path=none).check_exposure()  # noqa: S104
