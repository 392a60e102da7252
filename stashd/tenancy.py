"""Who a connection is: the namespace and limits that credentials resolve to.

This is the one place that maps credentials to a :class:`Principal`. Two keyrings:

- :class:`OpenKeyring` (``--auth open``, the zero-config default): any non-empty key is
  accepted and names its own namespace (a digest of the key, so the key itself is never
  stored or logged; recent keys are kept in memory with their principals, to spare a
  digest per request); connections that never authenticate share the default namespace.
- :class:`StrictKeyring` (``--auth keys``): only keys registered with ``stash keys
  create`` are accepted. A key is ``sk_live_`` + 32 random base62 characters + a 6
  character checksum, so secret scanners recognise it and a mistyped key is refused
  without a lookup. The registry holds only a SHA-256 digest of each key, looked up by
  digest and compared in constant time; a user's keys share the user's namespace and
  tier, so rotating a key keeps the data.

The AUTH and HELLO paths of every door end in :meth:`Keyring.authenticate`, and
:class:`AuthThrottle` slows down addresses that keep failing it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol, cast

from stashd import log
from stashd.errors import StoreUnavailable
from stashd.ratelimit import LocalLimiter, Rate, monotonic_ms
from stashd.registry import RegistryError
from stashd.types import DEFAULT_USER, Limits, Principal, wall_clock_ms

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from stashd.config import Config
    from stashd.registry import AsyncRegistry, KeyRecord, Registry

logger = log.get("stashd.tenancy")

DEFAULT_NAMESPACE: Final = "default"
#: The user of keys created without ``--user``, and the username Redis clients send when
#: they are given only a password (redis-py's ``HELLO 3 AUTH default <key>``).


BASE62: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
KEY_PREFIX: Final = "sk_live_"
#: 32 base62 characters: about 190 random bits, far beyond guessing, which is also why a
#: fast digest (SHA-256) is the right one: slow password hashes exist for low entropy.
KEY_RANDOM_CHARS: Final = 32
#: CRC32 of the random part in base62 (62**6 > 2**32), so a typo is caught before lookup.
KEY_CHECKSUM_CHARS: Final = 6
KEY_LENGTH: Final = len(KEY_PREFIX) + KEY_RANDOM_CHARS + KEY_CHECKSUM_CHARS
KEY_ID_PREFIX: Final = "key_"
KEY_ID_RANDOM_CHARS: Final = 12
_BASE62_BYTES: Final = frozenset(BASE62.encode())
#: User names end up in namespaces, logs and (later) Redis key names: keep them plain.
USER_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


def open_limits(config: Config) -> Limits:
    """The limits of open mode, for every caller: the daemon's and the embedded client's."""
    return Limits(
        max_payload=config.max_payload_bytes,
        default_ttl_ms=config.default_ttl * 1000,
        max_ttl_ms=config.max_ttl * 1000,
        rate=config.rate,
        quota=config.quota,
        clamp_ttl=config.over_max_ttl == "clamp",
    )


class Keyring(Protocol):
    """Resolves credentials to a principal; ``None`` means the credentials are refused."""

    @property
    def remote(self) -> bool:
        """True when AUTH must be awaited (:class:`RemoteKeyring`), False when answered at once."""
        ...

    def anonymous(self) -> Principal | None:
        """The principal of a connection that has not authenticated (None: must AUTH)."""
        ...

    def authenticate(self, username: str | None, key: bytes) -> Principal | None:
        """The principal for ``key``, or None for an unknown, revoked or malformed key."""
        ...


def namespace_of(key: bytes) -> str:
    """An open-mode key's namespace: a digest, so namespaces never reveal or store the key."""
    return hashlib.sha256(b"stash-namespace:" + key).hexdigest()[:32]


def namespace_of_user(user: str) -> str:
    """A registered user's namespace: shared by all of the user's keys.

    The colon keeps it apart from open-mode namespaces (hex digits) and ``default``, so
    a database served in either mode never mixes their data.
    """
    return f"user:{user}"


class OpenKeyring:
    """Open mode: every non-empty key is its own namespace, all with the same limits."""

    #: Nothing is looked up: AUTH is answered at once.
    remote = False
    #: Principals kept by key, in memory only: an HTTP request authenticates on every
    #: request, and hashing its key each time was a visible share of its cost. Past this
    #: many keys the table starts over, so a client inventing keys cannot grow it.
    KNOWN_KEYS: Final = 10_000

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._anonymous = Principal(DEFAULT_NAMESPACE, limits)
        self._known: dict[bytes, Principal] = {}

    def anonymous(self) -> Principal | None:
        """Unauthenticated connections share the default namespace."""
        return self._anonymous

    def authenticate(self, username: str | None, key: bytes) -> Principal | None:
        """Accept any non-empty key; the username does not change the namespace."""
        if not key:
            return None
        if username is not None and username != DEFAULT_USER:
            return Principal(namespace_of(key), self.limits, username)
        known = self._known
        principal = known.get(key)
        if principal is None:
            if len(known) >= self.KNOWN_KEYS:
                known.clear()
            principal = known[key] = Principal(namespace_of(key), self.limits)
        return principal


# -- registered keys --------------------------------------------------------------------


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        digits.append(BASE62[digit])
    return "".join(reversed(digits))


def _checksum(random_part: bytes) -> bytes:
    return _base62(zlib.crc32(random_part), KEY_CHECKSUM_CHARS).encode()


def new_key() -> str:
    """A fresh API key: prefix, random base62 from ``secrets``, checksum."""
    return key_from("".join(secrets.choice(BASE62) for _ in range(KEY_RANDOM_CHARS)))


def key_from(random_part: str) -> str:
    """The key made of ``random_part`` (32 base62 characters): prefix and checksum added."""
    return KEY_PREFIX + random_part + _checksum(random_part.encode()).decode()


def new_key_id() -> str:
    """A short public name for a key, for ``stash keys list`` and ``revoke``."""
    return KEY_ID_PREFIX + "".join(secrets.choice(BASE62) for _ in range(KEY_ID_RANDOM_CHARS))


def well_formed(key: bytes) -> bool:
    """True when ``key`` has the shape of a Stash key and its checksum matches."""
    if len(key) != KEY_LENGTH or not key.startswith(KEY_PREFIX.encode()):
        return False
    body = key[len(KEY_PREFIX) :]
    if not _BASE62_BYTES.issuperset(body):
        return False
    random_part = body[:KEY_RANDOM_CHARS]
    return hmac.compare_digest(body[KEY_RANDOM_CHARS:], _checksum(random_part))


def key_digest(key: bytes) -> bytes:
    """What the registry stores and looks up instead of the key: SHA-256, domain-separated."""
    return hashlib.sha256(b"stash-api-key:" + key).digest()


def check_user_name(user: str) -> str:
    """``user`` if it can name a namespace, else a ValueError naming the rule and the value."""
    if USER_NAME.fullmatch(user) is None:
        msg = (
            "user names are 1 to 64 characters of letters, digits and . _ @ -, "
            f"starting with a letter or digit; got {user!r}"
        )
        raise ValueError(msg)
    return user


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key just created: the secret (shown once) and its registry record."""

    secret: str
    record: KeyRecord
    previous_tier: str | None  # the user's tier before, when this call changed it


def issue_key(
    registry: Registry,
    user: str = DEFAULT_USER,
    tier: str | None = None,
    *,
    now_ms: int | None = None,
) -> IssuedKey:
    """Create a key for ``user`` (created on first use, tier ``free`` unless given).

    Giving a tier for an existing user moves the user, and so all of the user's keys,
    to that tier. Only the digest is stored; the secret is returned once.
    """
    check_user_name(user)
    secret = new_key()
    created = wall_clock_ms() if now_ms is None else now_ms
    record, previous = registry.add_key(
        new_key_id(), key_digest(secret.encode()), user, tier, created
    )
    return IssuedKey(secret, record, previous)


class StrictKeyring:
    """Strict mode: registered keys only, each resolving to its user's namespace and tier.

    Nothing is anonymous. A key is refused, with the same answer, when it is malformed
    (no lookup), unknown, revoked, of a tier this daemon does not know, or presented
    with a username other than its user's or ``default``.
    """

    def __init__(self, registry: Registry, tiers: Mapping[str, Limits]) -> None:
        self.registry = registry
        self.tiers = dict(tiers)
        # Revocations already seen are looked for again for this long, so a revocation
        # written by another process with a slightly different clock is never missed.
        self._overlap_ms = 5000
        self._since_ms = wall_clock_ms() - self._overlap_ms

    def anonymous(self) -> Principal | None:
        """Every connection must authenticate."""
        return None

    @property
    def remote(self) -> bool:
        """True when the registry is reached over the network (Redis).

        AUTH is then answered with :meth:`authenticate_async`, so that the event loop
        never waits on it.
        """
        return self.registry.remote

    def authenticate(self, username: str | None, key: bytes) -> Principal | None:
        """One indexed lookup by digest; a constant-time comparison of the digests.

        Raises :class:`StoreUnavailable` when the registry cannot be read.
        """
        if not well_formed(key):
            logger.debug("key_refused", reason="malformed")
            return None
        digest = key_digest(key)
        try:
            record = self.registry.find(digest)
        except RegistryError as exc:
            # Not the client's fault and maybe passing: say so rather than WRONGPASS.
            logger.exception("key_registry_unavailable", error=str(exc))
            raise StoreUnavailable("key registry") from None
        return self._principal(username, digest, record)

    async def authenticate_async(self, username: str | None, key: bytes) -> Principal | None:
        """:meth:`authenticate` with the registry's asynchronous lookup (Redis)."""
        if not well_formed(key):
            logger.debug("key_refused", reason="malformed")
            return None
        digest = key_digest(key)
        registry = cast("AsyncRegistry", self.registry)
        try:
            record = await registry.find_async(digest)
        except RegistryError as exc:
            logger.error("key_registry_unavailable", error=str(exc))  # noqa: TRY400 - expected
            raise StoreUnavailable("key registry") from None
        return self._principal(username, digest, record)

    def _principal(
        self, username: str | None, digest: bytes, record: KeyRecord | None
    ) -> Principal | None:
        """The rules after the lookup: known, same digest, not revoked, right user, known tier."""
        if record is None or not hmac.compare_digest(record.digest, digest):
            logger.debug("key_refused", reason="unknown")
            return None
        if record.revoked_at_ms is not None:
            logger.info("key_refused", reason="revoked", key_id=record.key_id)
            return None
        if username not in (None, DEFAULT_USER, record.user):
            logger.info("key_refused", reason="username", key_id=record.key_id)
            return None
        limits = self.tiers.get(record.tier)
        if limits is None:
            logger.error("key_refused", reason="unknown_tier", key_id=record.key_id)
            return None
        return Principal(namespace_of_user(record.user), limits, record.user, record.key_id)

    def revoked(self) -> set[str]:
        """Ids of keys revoked since the last call (with some overlap): one indexed query."""
        now = wall_clock_ms()
        ids = self.registry.revoked_since(self._since_ms)
        self._since_ms = now - self._overlap_ms
        return ids

    async def revoked_async(self) -> set[str]:
        """:meth:`revoked` with the registry's asynchronous query (Redis)."""
        now = wall_clock_ms()
        ids = await cast("AsyncRegistry", self.registry).revoked_since_async(self._since_ms)
        self._since_ms = now - self._overlap_ms
        return ids

    def close(self) -> None:
        """Release the registry."""
        self.registry.close()

    async def aclose(self) -> None:
        """Release the registry, its asynchronous connections included."""
        if self.registry.remote:
            await cast("AsyncRegistry", self.registry).aclose()
        else:
            self.registry.close()


# -- failed authentication ----------------------------------------------------------------

#: Failed AUTHs one address may make at once, and how fast that allowance comes back:
#: ten, then one every six seconds. A guesser gets ten guesses a minute per address
#: however many connections it opens; a client with a mistyped key recovers in a minute.
AUTH_FAILURES: Final = Rate(10, 60, 10)


class AuthThrottle:
    """Per client address: refuses AUTH unchecked once the address has failed too often.

    Failures are counted by a GCRA (:data:`AUTH_FAILURES`). While an address has no
    failures left, its AUTH and HELLO AUTH attempts are not looked up at all (even a
    correct key is refused) and their connections are closed, so the guessing rate is
    bounded by the refill rate, not by how fast the client reconnects.
    """

    #: Blocked addresses kept before expired blocks are dropped; bounds the table.
    PRUNE_AT: Final = 10_000

    def __init__(
        self, rate: Rate = AUTH_FAILURES, clock: Callable[[], float] = monotonic_ms
    ) -> None:
        self.rate = rate
        self.clock = clock
        self._failures = LocalLimiter(clock)
        self._blocked_until: dict[str, float] = {}

    def blocking(self) -> bool:
        """False when no address is blocked: then :meth:`blocked` is False for every one."""
        return bool(self._blocked_until)

    def blocked(self, address: str) -> bool:
        """True while ``address`` has no failed attempts left."""
        until = self._blocked_until.get(address)
        if until is None:
            return False
        if self.clock() >= until:
            del self._blocked_until[address]
            return False
        return True

    def failed(self, address: str) -> None:
        """Count a failed attempt; block the address once its allowance is used up."""
        decision = self._failures.acquire(address, self.rate)
        if decision.allowed and decision.remaining > 0:
            return
        rate = self.rate
        if decision.allowed:
            # The last one allowed: blocked until the next failure would fit again.
            wait = decision.reset_ms - (rate.burst - 1) * rate.interval_ms
        else:
            wait = decision.retry_after_ms
        now = self.clock()
        if len(self._blocked_until) >= self.PRUNE_AT:
            self._blocked_until = {a: t for a, t in self._blocked_until.items() if t > now}
        self._blocked_until[address] = now + max(1.0, wait)
        logger.warning("auth_blocked", address=address, seconds=round(max(1.0, wait) / 1000, 1))
