"""The tier table of strict mode: defaults, overrides from a TOML file and env, rendering.

Each registered user is on one tier, and the tier gives the user's :class:`Limits`.
Settings per tier, in the units the config uses elsewhere:

- ``max_payload_bytes``: the largest value, in bytes;
- ``default_ttl`` and ``max_ttl``: seconds;
- ``rate``: ``"60/min"`` (units s, min, h) or ``"unlimited"``; ``burst``: commands at once;
- ``max_keys`` and ``max_bytes``: the storage quota of each of the tier's namespaces, keys
  and bytes (keys plus values), or ``"unlimited"``; bytes also as Redis writes sizes
  (``"64mb"``).

Later sources win, setting by setting: the defaults below, then the file given by
``--tiers`` / ``STASH_TIERS`` (one table per tier), then ``STASH_TIER_<TIER>_<SETTING>``
variables (``STASH_TIER_PRO_MAX_TTL=172800``).
"""

from __future__ import annotations

import tomllib
from typing import TYPE_CHECKING, Any, Final

from stashd.ratelimit import Rate
from stashd.sizes import parse_size
from stashd.types import Limits, Quota

if TYPE_CHECKING:
    from collections.abc import Mapping

TIER_NAMES: Final = ("free", "pro", "enterprise")
SETTINGS: Final = (
    "max_payload_bytes",
    "default_ttl",
    "max_ttl",
    "rate",
    "burst",
    "max_keys",
    "max_bytes",
)
ENV_PREFIX: Final = "STASH_TIER_"
UNLIMITED: Final = frozenset({"unlimited", "none", "off"})

MIB: Final = 1024 * 1024
GIB: Final = 1024 * MIB
HOUR: Final = 3600
DAY: Final = 24 * HOUR

#: The published defaults. The enterprise default TTL is a day: long-lived context, yet
#: still trash-first; its maximum is a week and it has no rate limit or storage quota
#: unless configured. A free namespace holds at most 10,000 keys and 64 MiB, so one
#: key cannot fill a server (an MSET of 900 x 1 MiB values once wrote 2.7 GB).
DEFAULTS: Final[Mapping[str, Mapping[str, Any]]] = {
    "free": {
        "max_payload_bytes": MIB,
        "default_ttl": HOUR,
        "max_ttl": HOUR,
        "rate": "60/min",
        "burst": 10,
        "max_keys": 10_000,
        "max_bytes": 64 * MIB,
    },
    "pro": {
        "max_payload_bytes": 50 * MIB,
        "default_ttl": DAY,
        "max_ttl": DAY,
        "rate": "300/min",
        "burst": 50,
        "max_keys": 1_000_000,
        "max_bytes": 4 * GIB,
    },
    "enterprise": {
        "max_payload_bytes": 500 * MIB,
        "default_ttl": DAY,
        "max_ttl": 7 * DAY,
        "rate": "unlimited",
        "burst": None,
        "max_keys": "unlimited",
        "max_bytes": "unlimited",
    },
}


class TierError(ValueError):
    """A tier setting that cannot be used; the message names where it came from and the value."""


def resolve(
    file_text: str | None = None,
    env: Mapping[str, str] | None = None,
    *,
    file_name: str = "tiers file",
) -> dict[str, Limits]:
    """The tier table: defaults, then the TOML ``file_text``, then ``STASH_TIER_*`` in env.

    Raises :class:`TierError` naming the file or variable, the setting and the value.
    """
    raw = {tier: dict(settings) for tier, settings in DEFAULTS.items()}
    sources = {tier: dict.fromkeys(settings, "default") for tier, settings in DEFAULTS.items()}
    if file_text is not None:
        try:
            document = tomllib.loads(file_text)
        except tomllib.TOMLDecodeError as exc:
            raise TierError(f"{file_name} is not valid TOML: {exc}") from None
        for tier, table in document.items():
            if tier not in raw:
                raise TierError(
                    f"{file_name}: unknown tier {tier!r}; tiers are {', '.join(TIER_NAMES)}"
                )
            if not isinstance(table, dict):
                raise TierError(f"{file_name}: [{tier}] must be a table, got {table!r}")
            for setting, value in table.items():
                if setting not in SETTINGS:
                    raise TierError(
                        f"{file_name}: unknown setting {setting!r} in [{tier}]; "
                        f"settings are {', '.join(SETTINGS)}"
                    )
                raw[tier][setting] = value
                sources[tier][setting] = f"{file_name} [{tier}] {setting}"
    for var, value in sorted((env or {}).items()):
        if not var.startswith(ENV_PREFIX):
            continue
        rest = var[len(ENV_PREFIX) :].lower()
        tier, _, setting = rest.partition("_")
        if tier not in raw or setting not in SETTINGS:
            raise TierError(
                f"unknown variable {var}: expected STASH_TIER_<TIER>_<SETTING> with TIER one "
                f"of {', '.join(t.upper() for t in TIER_NAMES)} and SETTING one of "
                f"{', '.join(s.upper() for s in SETTINGS)}"
            )
        raw[tier][setting] = value
        sources[tier][setting] = var
    return {tier: _limits(raw[tier], sources[tier]) for tier in TIER_NAMES}


def _integer(value: object, where: str, *, minimum: int = 1) -> int:
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise TierError(f"{where} must be an integer, got {value!r}") from None
    if type(value) is not int:
        raise TierError(f"{where} must be an integer, got {value!r}")
    if value < minimum:
        raise TierError(f"{where} must be at least {minimum}, got {value}")
    return value


def _quota_side(value: object, where: str, *, size: bool) -> int | None:
    """One side of a storage quota: a whole number (a size for bytes) or unlimited (None)."""
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in UNLIMITED:
            return None
        try:
            value = parse_size(text, where) if size else int(text)
        except ValueError:
            what = "a number of bytes (or with k, kb, m, mb, g or gb)" if size else "an integer"
            raise TierError(f"{where} must be {what} or 'unlimited', got {value!r}") from None
    if type(value) is not int:
        what = "a number of bytes" if size else "an integer"
        raise TierError(f"{where} must be {what} or 'unlimited', got {value!r}")
    if value < 1:
        raise TierError(f"{where} must be at least 1 or 'unlimited', got {value}")
    return value


def _limits(raw: Mapping[str, Any], source: Mapping[str, str]) -> Limits:
    payload = _integer(raw["max_payload_bytes"], source["max_payload_bytes"])
    default_ttl = _integer(raw["default_ttl"], source["default_ttl"])
    max_ttl = _integer(raw["max_ttl"], source["max_ttl"])
    if default_ttl > max_ttl:
        raise TierError(
            f"default_ttl ({default_ttl}, from {source['default_ttl']}) must not exceed "
            f"max_ttl ({max_ttl}, from {source['max_ttl']})"
        )
    rate_text = raw["rate"]
    if not isinstance(rate_text, str):
        raise TierError(f"{source['rate']} must be a string like '60/min', got {rate_text!r}")
    rate: Rate | None = None
    if rate_text.strip().lower() not in UNLIMITED:
        burst = None if raw["burst"] is None else _integer(raw["burst"], source["burst"])
        try:
            rate = Rate.parse(rate_text, burst)
        except ValueError as exc:
            raise TierError(f"{source['rate']}: {exc}") from None
    quota = Quota(
        _quota_side(raw["max_keys"], source["max_keys"], size=False),
        _quota_side(raw["max_bytes"], source["max_bytes"], size=True),
    )
    return Limits(payload, default_ttl * 1000, max_ttl * 1000, rate, quota)


def size_text(n: int) -> str:
    """Bytes as people read them: whole MiB or KiB when exact, else bytes."""
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


def duration_text(ms: int) -> str:
    """A duration in the largest whole unit (d from two days on, h, min, s)."""
    seconds = ms // 1000
    for unit, size in (("d", DAY), ("h", HOUR), ("min", 60)):
        if seconds >= size * (2 if unit == "d" else 1) and seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def render(table: Mapping[str, Limits]) -> str:
    """The table as ``stash tiers`` prints it."""
    rows = [("tier", "max payload", "default ttl", "max ttl", "rate", "max keys", "max bytes")]
    for tier, limits in table.items():
        quota = limits.quota
        rows.append(
            (
                tier,
                size_text(limits.max_payload),
                duration_text(limits.default_ttl_ms),
                duration_text(limits.max_ttl_ms),
                "unlimited" if limits.rate is None else str(limits.rate),
                "unlimited" if quota.max_keys is None else f"{quota.max_keys:,}",
                "unlimited" if quota.max_bytes is None else size_text(quota.max_bytes),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
