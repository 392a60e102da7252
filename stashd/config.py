"""One frozen Config for the daemon, resolved once: flags > env (STASH_*) > .env > defaults."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import platformdirs
from dotenv import dotenv_values

from stashd import outputlimit
from stashd.outputlimit import OutputLimits
from stashd.ratelimit import Rate
from stashd.redistarget import RedisTarget
from stashd.sizes import parse_size
from stashd.tiers import ENV_PREFIX as TIER_ENV_PREFIX
from stashd.tiers import resolve as resolve_tiers
from stashd.types import Quota

if TYPE_CHECKING:
    from collections.abc import Mapping

    from stashd.types import Limits

BACKENDS: Final = ("sqlite", "memory", "redis")
#: The Redis of ``--backend redis`` when neither --redis-url nor an env variable names one.
DEFAULT_REDIS_URL: Final = "redis://127.0.0.1:6379/0"
SQLITE_SYNCHRONOUS: Final = ("normal", "full")
AUTH_MODES: Final = ("open", "keys")
#: What a TTL past the maximum gets: refused (Stash's rule), or the maximum instead.
OVER_MAX_TTL: Final = ("refuse", "clamp")
LOG_FORMATS: Final = ("json", "console")
LOG_LEVELS: Final = ("debug", "info", "warning", "error", "critical")
#: Redis's default client-query-buffer-limit: what one unfinished request may make us hold.
MAX_QUERY_BUFFER: Final = 1024 * 1024 * 1024
#: Fields resolved from other settings rather than read from a STASH_* variable.
_DERIVED: Final = frozenset({"tier_overrides"})


class ConfigError(ValueError):
    """A setting that cannot be used; the message names the setting and the value."""


@dataclass(frozen=True, slots=True)
class Config:
    """Every setting of a running daemon; see the README for each one's env twin."""

    host: str = "127.0.0.1"
    port: int = 6380
    backend: str = "sqlite"
    default_ttl: int = 3600  # seconds, for writes that name no TTL
    max_ttl: int = 86400  # seconds; nothing lives longer
    over_max_ttl: str = "refuse"  # refuse: a longer TTL is an error; clamp: it gets max_ttl
    max_payload_bytes: int = 1024 * 1024
    max_keys: int = 1_000_000  # open mode: keys one namespace may hold; 0 means no limit
    max_bytes: str = "1gb"  # open mode: its keys' and values' bytes, as Redis writes sizes
    log_level: str = "info"
    log_format: str = "console"
    allow_open: bool = False  # serve open mode on a non-loopback address anyway
    db: str = ""  # SQLite file for data and the key registry; "" means the default path
    sqlite_synchronous: str = "normal"  # normal: survives process crashes; full: power loss
    auth: str = "open"  # open: any key names its namespace; keys: registered keys only
    http: bool = True  # serve the HTTP API beside RESP
    http_port: int = 8000
    mcp: bool = True  # serve MCP at /mcp of the HTTP API
    tiers: str = ""  # TOML file overriding the tier table of strict mode
    rate_limit: str = ""  # open mode: commands per period ("600/min"); "" means no limit
    rate_burst: int = 0  # open mode: commands at once; 0 means one period's worth
    max_clients: int = 10000  # connection N+1 is told so and closed
    auth_timeout: int = 10  # strict mode: seconds a connection has to authenticate
    max_query_buffer: int = MAX_QUERY_BUFFER  # bytes one connection's request may hold
    lua_time_limit: int = 5000  # ms a script may run before it is stopped (lua-time-limit)
    # Redis's form ("4gb"): past it, writes that add data are refused; "0" means no limit.
    maxmemory: str = "0"
    # Redis's form: "<class> <hard> <soft> <seconds>" for normal and pubsub connections.
    client_output_buffer_limit: str = outputlimit.DEFAULT
    redis_url: str = ""  # --backend redis: where Redis is; "" means DEFAULT_REDIS_URL
    redis_cluster: bool = False  # --backend redis: the URL names a node of a Redis Cluster
    # STASH_TIER_<TIER>_<SETTING> variables found in env and .env, applied over the file.
    tier_overrides: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        """Validate once, so the rest of the code can trust every field."""
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.sqlite_synchronous not in SQLITE_SYNCHRONOUS:
            raise ConfigError(
                f"sqlite_synchronous must be one of {', '.join(SQLITE_SYNCHRONOUS)}, "
                f"got {self.sqlite_synchronous!r}"
            )
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be between 0 and 65535, got {self.port}")
        if not 0 <= self.http_port <= 65535:
            raise ConfigError(f"http_port must be between 0 and 65535, got {self.http_port}")
        if self.auth not in AUTH_MODES:
            raise ConfigError(f"auth must be one of {', '.join(AUTH_MODES)}, got {self.auth!r}")
        if self.default_ttl <= 0:
            raise ConfigError(f"default_ttl must be positive, got {self.default_ttl}")
        if self.max_ttl <= 0:
            raise ConfigError(f"max_ttl must be positive, got {self.max_ttl}")
        if self.default_ttl > self.max_ttl:
            raise ConfigError(
                f"default_ttl ({self.default_ttl}) must not exceed max_ttl ({self.max_ttl})"
            )
        if self.over_max_ttl not in OVER_MAX_TTL:
            raise ConfigError(
                f"over_max_ttl must be one of {', '.join(OVER_MAX_TTL)}, got {self.over_max_ttl!r}"
            )
        if self.max_payload_bytes <= 0:
            raise ConfigError(f"max_payload_bytes must be positive, got {self.max_payload_bytes}")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(
                f"log_level must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}"
            )
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(
                f"log_format must be one of {', '.join(LOG_FORMATS)}, got {self.log_format!r}"
            )
        if self.max_clients < 1:
            raise ConfigError(f"max_clients must be at least 1, got {self.max_clients}")
        if self.lua_time_limit < 1:
            raise ConfigError(f"lua_time_limit must be at least 1 ms, got {self.lua_time_limit}")
        if self.auth_timeout < 1:
            raise ConfigError(f"auth_timeout must be at least 1 second, got {self.auth_timeout}")
        if self.rate_burst < 0:
            raise ConfigError(f"rate_burst must not be negative, got {self.rate_burst}")
        if self.rate_burst and not self.rate_limit:
            raise ConfigError(f"rate_burst ({self.rate_burst}) needs a rate_limit such as 600/min")
        self.rate  # noqa: B018 - parses rate_limit, raising ConfigError if it cannot
        self.output_limits  # noqa: B018 - parses client_output_buffer_limit likewise
        self.maxmemory_bytes  # noqa: B018 - parses maxmemory likewise
        self.quota  # noqa: B018 - parses max_bytes likewise
        if self.backend == "redis":
            self.redis_target  # noqa: B018 - parses redis_url, raising ConfigError if it cannot
        table = self.tier_table()  # read in either mode, so a bad override is never silent
        largest, where = self.max_payload_bytes, "max_payload_bytes"
        if self.auth == "keys":
            largest, where = max(
                (limits.max_payload, f"tier {name}") for name, limits in table.items()
            )
        if self.max_query_buffer <= largest:
            raise ConfigError(
                f"max_query_buffer ({self.max_query_buffer} bytes) must exceed the largest "
                f"payload limit ({largest} bytes, {where})"
            )

    @property
    def rate(self) -> Rate | None:
        """Open mode's rate limit (rate_limit with rate_burst), or None when off."""
        if not self.rate_limit:
            return None
        try:
            return Rate.parse(self.rate_limit, self.rate_burst or None)
        except ValueError as exc:
            raise ConfigError(f"rate_limit: {exc}") from None

    @property
    def output_limits(self) -> OutputLimits:
        """The client output buffer limits of every connection class."""
        try:
            return OutputLimits.parse(self.client_output_buffer_limit)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    @property
    def maxmemory_bytes(self) -> int:
        """``maxmemory`` in bytes (0: no limit)."""
        try:
            return parse_size(self.maxmemory, "maxmemory")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    @property
    def quota(self) -> Quota:
        """Open mode's storage quota per namespace: max_keys and max_bytes, 0 for no limit."""
        if self.max_keys < 0:
            raise ConfigError(f"max_keys must not be negative (0: no limit), got {self.max_keys}")
        try:
            max_bytes = parse_size(self.max_bytes, "max_bytes")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return Quota(self.max_keys or None, max_bytes or None)

    @property
    def redis_target(self) -> RedisTarget:
        """The Redis of ``--backend redis``: redis_url (or the default) with redis_cluster."""
        try:
            return RedisTarget.parse(
                self.redis_url or DEFAULT_REDIS_URL, cluster=self.redis_cluster
            )
        except ValueError as exc:
            raise ConfigError(f"redis_url: {exc}") from None

    def tier_table(self) -> dict[str, Limits]:
        """Strict mode's tiers: defaults, then the ``tiers`` file, then STASH_TIER_* variables."""
        text = None
        if self.tiers:
            path = Path(self.tiers).expanduser()
            try:
                text = path.read_text()
            except OSError as exc:
                raise ConfigError(f"cannot read the tiers file {path}: {exc.strerror}") from None
        try:
            table = resolve_tiers(text, dict(self.tier_overrides), file_name=self.tiers)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        # The policy is the daemon's, the same for every tier: each tier keeps its maximum.
        clamp = self.over_max_ttl == "clamp"
        return {name: replace(limits, clamp_ttl=clamp) for name, limits in table.items()}

    @property
    def db_path(self) -> Path:
        """The SQLite file: ``db`` if set, else ``stash.db`` in the user's data directory."""
        if self.db:
            return Path(self.db).expanduser()
        return Path(platformdirs.user_data_dir("stash", appauthor=False)) / "stash.db"

    def check_exposure(self) -> None:
        """Protected mode: open mode serves loopback only unless --allow-open says otherwise."""
        if self.allow_open or self.auth == "keys" or is_loopback(self.host):
            return
        raise ConfigError(
            f"refusing to listen on {self.host}: in open mode any client can read and write "
            "without a registered key, so stashd serves only loopback addresses. "
            "Pass --allow-open (STASH_ALLOW_OPEN=1) if this network is trusted."
        )


def is_loopback(host: str) -> bool:
    """True for localhost and every loopback address (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off", ""})


def _coerce(name: str, kind: Any, raw: Any) -> Any:  # noqa: ANN401 - typed by the field
    """Turn a string from env or .env into the field's type, naming the setting on error."""
    if not isinstance(raw, str):
        return raw
    if kind in (bool, "bool"):
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ConfigError(f"{name} must be true or false, got {raw!r}")
    if kind in (int, "int"):
        try:
            return int(raw.strip())
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    return raw.strip()


def load(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    dotenv_path: Path | None = None,
) -> Config:
    """Resolve a Config: flags (None means 'not given') over env over .env over defaults."""
    env = os.environ if env is None else env
    path = Path(".env") if dotenv_path is None else dotenv_path
    dotenv = (
        {k: v for k, v in dotenv_values(path).items() if v is not None} if path.is_file() else {}
    )
    values: dict[str, Any] = {}
    overrides = {k: v for k, v in dotenv.items() if k.startswith(TIER_ENV_PREFIX)}
    overrides.update((k, v) for k, v in env.items() if k.startswith(TIER_ENV_PREFIX))
    values["tier_overrides"] = tuple(sorted(overrides.items()))
    for field in fields(Config):
        if field.name in _DERIVED:
            continue
        var = "STASH_" + field.name.upper()
        # REDIS_URL is the name most tools and platforms use; STASH_REDIS_URL wins over it.
        fallback = "REDIS_URL" if field.name == "redis_url" else None
        raw: Any = None
        if flags and flags.get(field.name) is not None:
            raw = flags[field.name]
        elif var in env:
            raw = env[var]
        elif fallback is not None and fallback in env:
            raw = env[fallback]
        elif var in dotenv:
            raw = dotenv[var]
        elif fallback is not None and fallback in dotenv:
            raw = dotenv[fallback]
        if raw is not None:
            values[field.name] = _coerce(var, field.type, raw)
    return Config(**values)
