"""The strict-mode commands: ``stash keys`` (create, list, revoke API keys) and ``stash tiers``.

Keys are :mod:`stashd.tenancy` over :mod:`stashd.registry`, in the SQLite file or in
Redis as the options say; the tier table is :mod:`stashd.tiers`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import click

from stashd.cli_exit import USAGE, fail
from stashd.config import BACKENDS, Config, ConfigError, load
from stashd.registry import RegistryError
from stashd.service import rfc3339
from stashd.tenancy import issue_key
from stashd.tiers import TIER_NAMES, render
from stashd.types import DEFAULT_USER, wall_clock_ms

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from stashd.registry import Registry


def _config(**flags: Any) -> Config:  # noqa: ANN401 - option values
    try:
        return load(flags)
    except ConfigError as exc:
        fail(str(exc), USAGE)


class _Registry:
    """Open the registry the options name (flags, then STASH_* and .env), close it after.

    With ``--backend redis`` it is in Redis at ``--redis-url``; otherwise in the SQLite
    file named by ``--db``.
    """

    def __init__(self, where: dict[str, Any]) -> None:
        self.config = _config(**where)
        if self.config.backend == "redis":
            self.label = self.config.redis_target.display()
        else:
            self.label = str(self.config.db_path)

    def __enter__(self) -> Registry:
        from stashd import app  # noqa: PLC0415 - the daemon's modules, loaded only here

        try:
            self.registry = app.make_registry(self.config)
        except RegistryError as exc:
            fail(str(exc))
        return self.registry

    def __exit__(self, *exc: object) -> None:
        self.registry.close()


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return rfc3339(ms)


def _db_option(fn: Any) -> Any:  # noqa: ANN401 - click decorators are untyped
    return click.option(
        "--db",
        default=None,
        metavar="PATH",
        help="SQLite file holding the keys. [STASH_DB; in the user data directory]",
    )(fn)


def _registry_options(fn: Any) -> Any:  # noqa: ANN401 - click decorators are untyped
    """--db, or --backend redis with --redis-url (and --redis-cluster): where keys are."""
    options = [
        click.option(
            "--backend",
            type=click.Choice(BACKENDS),
            default=None,
            help="redis: the keys are in Redis (--redis-url), shared by every node; "
            "otherwise in the SQLite file. [STASH_BACKEND; sqlite]",
        ),
        click.option(
            "--redis-url",
            default=None,
            metavar="URL",
            help="--backend redis: the Redis holding the keys. "
            "[STASH_REDIS_URL, REDIS_URL; redis://127.0.0.1:6379/0]",
        ),
        click.option(
            "--redis-cluster",
            is_flag=True,
            default=None,
            help="--backend redis: the URL names a node of a Redis Cluster. [STASH_REDIS_CLUSTER]",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return _db_option(fn)


@click.group(name="keys")
def keys() -> None:
    """Create, list and revoke the API keys of strict mode (stashd --auth keys).

    \b
    Example:
      stash keys create --user alice --tier pro --db ./stash.db
      stash keys list --db ./stash.db
      stash keys revoke key_3fT9xQ2mLp0A --db ./stash.db
      stash keys list --backend redis --redis-url redis://redis:6379/0
    """


@keys.command(name="create")
@click.option(
    "--user",
    default=DEFAULT_USER,
    show_default=True,
    help="Whose key: a user's keys share one namespace, so rotating keeps the data.",
)
@click.option(
    "--tier",
    type=click.Choice(TIER_NAMES),
    default=None,
    help="The user's tier. New users start on free; giving it moves an existing user.",
)
@_registry_options
def keys_create(user: str, tier: str | None, **where: Any) -> None:  # noqa: ANN401
    """Create a key and print it once (only its digest is stored).

    The key goes to stdout alone, so it can be captured; what it is goes to stderr.

    \b
    Example:
      KEY=$(stash keys create --user alice --tier pro --db ./stash.db)
      redis-cli -p 6380 -a "$KEY" SET plan '{"step":1}'
    """
    with _Registry(where) as registry:
        try:
            issued = issue_key(registry, user, tier)
        except ValueError as exc:
            fail(str(exc), USAGE)
        except RegistryError as exc:
            fail(str(exc))
    record = issued.record
    click.echo(issued.secret)
    if issued.previous_tier is not None:
        click.echo(
            f"user {record.user} moved from tier {issued.previous_tier} to {record.tier}", err=True
        )
    click.echo(
        f"created {record.key_id} for user {record.user} (tier {record.tier}); "
        "the key is shown only this once, store it now",
        err=True,
    )


@keys.command(name="list")
@_registry_options
def keys_list(**where: Any) -> None:  # noqa: ANN401
    """Show users, tiers, key ids and creation times; never a key.

    \b
    Example:
      stash keys list --db ./stash.db
    """
    with _Registry(where) as registry:
        try:
            records = registry.records()
        except RegistryError as exc:
            fail(str(exc))
    if not records:
        click.echo("no keys yet; create one with: stash keys create --user NAME", err=True)
        return
    rows = [("user", "tier", "key id", "created", "revoked")]
    rows += [
        (r.user, r.tier, r.key_id, _when(r.created_at_ms), _when(r.revoked_at_ms)) for r in records
    ]
    click.echo("\n".join(_table(rows)))


def _table(rows: Sequence[tuple[str, ...]]) -> Iterator[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        yield "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()


@keys.command(name="revoke")
@click.argument("key_id")
@_registry_options
def keys_revoke(key_id: str, **where: Any) -> None:  # noqa: ANN401
    """Revoke one key: refused at the next AUTH, its connections closed within a second.

    \b
    Example:
      stash keys revoke key_3fT9xQ2mLp0A --db ./stash.db
    """
    opened = _Registry(where)
    with opened as registry:
        now = wall_clock_ms()
        try:
            record = registry.revoke(key_id, now)
        except RegistryError as exc:
            fail(str(exc))
    if record is None:
        fail(f"no key with id {key_id!r} in {opened.label}; see: stash keys list")
    assert record.revoked_at_ms is not None
    if record.revoked_at_ms < now:
        click.echo(
            f"{key_id} (user {record.user}) was already revoked at {_when(record.revoked_at_ms)}"
        )
    else:
        click.echo(f"revoked {key_id} (user {record.user})")


@click.command(name="tiers")
@click.option(
    "--tiers",
    default=None,
    metavar="FILE",
    help="TOML file overriding the defaults. [STASH_TIERS]",
)
def tiers(tiers: str | None) -> None:
    """Print the tier table strict mode uses: defaults, then the file, then env.

    Each setting can be overridden per tier with STASH_TIER_<TIER>_<SETTING>
    (MAX_PAYLOAD_BYTES, DEFAULT_TTL, MAX_TTL in seconds, RATE such as 300/min or
    unlimited, BURST), or in a TOML file with one table per tier.

    \b
    Example:
      STASH_TIER_PRO_MAX_TTL=172800 stash tiers
      stash tiers --tiers tiers.toml   # a file with: [free] rate = "120/min"
    """
    click.echo(render(_config(tiers=tiers).tier_table()))


#: The commands this module adds to ``stash``.
COMMANDS: Final[tuple[click.Command, ...]] = (keys, tiers)
