"""The ``stashd`` (daemon) and ``stash`` (serve, data commands, keys, tiers) CLIs.

A thin click layer: options become a Config (flags > env > .env > defaults); the daemon
is :mod:`stashd.app`, the data commands (set, get, stash, recall, update, forget, ttl,
ls) are :class:`stashd.client.Stash`, keys are :mod:`stashd.tenancy` over
:mod:`stashd.registry`, and the tier table is :mod:`stashd.tiers`.
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import TYPE_CHECKING, Any, Final, NoReturn

import click

from stashd import app, log, outputlimit
from stashd._version import __version__
from stashd.client import Stash, in_python_words, remote_environment
from stashd.config import (
    AUTH_MODES,
    BACKENDS,
    LOG_FORMATS,
    LOG_LEVELS,
    SQLITE_SYNCHRONOUS,
    Config,
    ConfigError,
    load,
)
from stashd.errors import (
    AuthenticationError,
    BadExtend,
    CommandError,
    Conflict,
    DataAndMerge,
    EmptyUpdate,
    InvalidTTL,
    NotJSON,
    PayloadTooLarge,
    RateLimited,
    StashError,
    StoreUnavailable,
)
from stashd.jsontext import dump_json, load_json
from stashd.registry import RegistryError
from stashd.service import rfc3339
from stashd.store.base import StoreOpenError, wall_clock_ms
from stashd.tenancy import DEFAULT_USER, issue_key
from stashd.tiers import TIER_NAMES, render

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from stashd.registry import Registry


def _serve_options(fn: Any) -> Any:  # noqa: ANN401 - click decorators are untyped
    options = [
        click.option("--host", default=None, help="Address to listen on. [STASH_HOST; 127.0.0.1]"),
        click.option("--port", type=int, default=None, help="RESP port. [STASH_PORT; 6380]"),
        click.option(
            "--backend",
            type=click.Choice(BACKENDS),
            default=None,
            help="Where entries live. [STASH_BACKEND; sqlite]",
        ),
        click.option(
            "--default-ttl",
            type=int,
            default=None,
            help="Seconds for writes that name no TTL. [STASH_DEFAULT_TTL; 3600]",
        ),
        click.option(
            "--max-ttl",
            type=int,
            default=None,
            help="No key lives longer, in seconds. [STASH_MAX_TTL; 86400]",
        ),
        click.option(
            "--max-payload-bytes",
            type=int,
            default=None,
            help="Largest value accepted. [STASH_MAX_PAYLOAD_BYTES; 1048576]",
        ),
        click.option(
            "--max-keys",
            type=int,
            default=None,
            help="Open mode: keys one namespace may hold. [STASH_MAX_KEYS; 1000000; 0, no limit]",
        ),
        click.option(
            "--max-bytes",
            default=None,
            metavar="SIZE",
            help="Open mode: bytes of keys and values one namespace may hold, as Redis writes "
            "sizes (512mb). [STASH_MAX_BYTES; 1gb; 0, no limit]",
        ),
        click.option(
            "--log-level",
            type=click.Choice(LOG_LEVELS),
            default=None,
            help="[STASH_LOG_LEVEL; info]",
        ),
        click.option(
            "--log-format",
            type=click.Choice(LOG_FORMATS),
            default=None,
            help="[STASH_LOG_FORMAT; console]",
        ),
        click.option(
            "--db",
            default=None,
            help="SQLite file for data and API keys. [STASH_DB; in the user data directory]",
        ),
        click.option(
            "--sqlite-synchronous",
            type=click.Choice(SQLITE_SYNCHRONOUS),
            default=None,
            help="normal survives a crash of stashd; full also a power loss, with an fsync "
            "per commit. [STASH_SQLITE_SYNCHRONOUS; normal]",
        ),
        click.option(
            "--redis-url",
            default=None,
            metavar="URL",
            help="--backend redis: redis://[user:pass@]host:port/db, rediss:// for TLS "
            "(certificates checked). [STASH_REDIS_URL, REDIS_URL; redis://127.0.0.1:6379/0]",
        ),
        click.option(
            "--redis-cluster",
            is_flag=True,
            default=None,
            help="--backend redis: the URL names a node of a Redis Cluster. [STASH_REDIS_CLUSTER]",
        ),
        click.option(
            "--auth",
            type=click.Choice(AUTH_MODES),
            default=None,
            help="open: any key names a namespace; keys: registered keys only. [STASH_AUTH; open]",
        ),
        click.option(
            "--http-port",
            type=int,
            default=None,
            help="Port of the HTTP API. [STASH_HTTP_PORT; 8000]",
        ),
        click.option(
            "--http/--no-http",
            default=None,
            help="Serve the HTTP API beside RESP. [STASH_HTTP; on]",
        ),
        click.option(
            "--allow-open",
            is_flag=True,
            default=None,
            help="Serve open mode on a non-loopback address. [STASH_ALLOW_OPEN]",
        ),
        click.option(
            "--tiers",
            default=None,
            metavar="FILE",
            help="TOML file overriding the tier table of --auth keys. [STASH_TIERS]",
        ),
        click.option(
            "--rate-limit",
            default=None,
            metavar="RATE",
            help="Open mode: commands per client namespace, e.g. 600/min. [STASH_RATE_LIMIT; off]",
        ),
        click.option(
            "--rate-burst",
            type=int,
            default=None,
            help="Open mode: commands allowed at once. [STASH_RATE_BURST; one period's worth]",
        ),
        click.option(
            "--max-clients",
            type=int,
            default=None,
            help="Connections served at once. [STASH_MAX_CLIENTS; 10000]",
        ),
        click.option(
            "--auth-timeout",
            type=int,
            default=None,
            help="Strict mode: seconds a connection has to authenticate. [STASH_AUTH_TIMEOUT; 10]",
        ),
        click.option(
            "--max-query-buffer",
            type=int,
            default=None,
            help="Bytes one connection's request may make the server hold. "
            "[STASH_MAX_QUERY_BUFFER; 1073741824]",
        ),
        click.option(
            "--maxmemory",
            default=None,
            metavar="SIZE",
            help="Memory for data and queued requests, as Redis writes it (4gb); past it, "
            "writes that add data get OOM. [STASH_MAXMEMORY; 0, no limit]",
        ),
        click.option(
            "--client-output-buffer-limit",
            default=None,
            metavar="LIMITS",
            help="Unsent reply bytes a connection may hold, as Redis writes it: "
            "'<class> <hard> <soft> <seconds>' for normal and pubsub. "
            f"[STASH_CLIENT_OUTPUT_BUFFER_LIMIT; {outputlimit.DEFAULT}]",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _serve(**flags: Any) -> None:  # noqa: ANN401
    try:
        config = load(flags)
        config.check_exposure()
    except ConfigError as exc:
        click.echo(f"stashd: {exc}", err=True)
        sys.exit(2)
    log.configure(config.log_level, config.log_format)
    try:
        app.run(config)
    except ConfigError as exc:  # a setting this machine cannot give (the open-file limit)
        click.echo(f"stashd: {exc}", err=True)
        sys.exit(2)
    except (RegistryError, StoreOpenError) as exc:
        click.echo(f"stashd: {exc}", err=True)
        sys.exit(1)


@click.command(name="stashd", context_settings={"help_option_names": ["-h", "--help"]})
@_serve_options
@click.version_option(__version__, prog_name="stashd")
def stashd_main(**flags: Any) -> None:  # noqa: ANN401
    """Run the Stash daemon: RESP on 127.0.0.1:6380, HTTP on :8000, every key expiring.

    \b
    Example:
      stashd --port 6380 --default-ttl 600
      redis-cli -p 6380 STASH '{"task":"summarize"}' EX 3600
      curl -X POST localhost:8000/stash -d '{"data": {"task": "summarize"}}'

    \b
    Strict mode, registered keys only:
      stash keys create --user alice --tier pro --db ./stash.db
      stashd --auth keys --db ./stash.db --host 0.0.0.0
    """
    _serve(**flags)


@click.group(name="stash", context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="stash")
def stash_main() -> None:
    """Stash: working memory for AI agents, JSON that always expires.

    The data commands work on the SQLite file in this process (--db, STASH_DB), or on
    a running stashd with --url / --api-key (STASH_URL, STASH_API_KEY). They print
    JSON on stdout and errors on stderr, with an exit code per kind of error (1: not
    found, 2: usage; see the README).

    \b
    Example:
      stash set plan '{"step": 1}' --ttl 600
      stash get plan | jq .step
      stash serve --port 6380
    """


@stash_main.command(name="serve")
@_serve_options
def serve(**flags: Any) -> None:  # noqa: ANN401
    """Run the daemon (the same as ``stashd``).

    \b
    Example:
      stash serve --port 6380 --log-format json
    """
    _serve(**flags)


# -- keys and tiers -----------------------------------------------------------------------


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"stash: {message}", err=True)
    sys.exit(code)


def _config(**flags: Any) -> Config:  # noqa: ANN401 - option values
    try:
        return load(flags)
    except ConfigError as exc:
        _fail(str(exc), 2)


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
        try:
            self.registry = app.make_registry(self.config)
        except RegistryError as exc:
            _fail(str(exc))
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


@stash_main.group(name="keys")
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
            _fail(str(exc), 2)
        except RegistryError as exc:
            _fail(str(exc))
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
            _fail(str(exc))
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
            _fail(str(exc))
    if record is None:
        _fail(f"no key with id {key_id!r} in {opened.label}; see: stash keys list")
    assert record.revoked_at_ms is not None
    if record.revoked_at_ms < now:
        click.echo(
            f"{key_id} (user {record.user}) was already revoked at {_when(record.revoked_at_ms)}"
        )
    else:
        click.echo(f"revoked {key_id} (user {record.user})")


@stash_main.command(name="tiers")
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


# -- data commands: thin over stashd.client ------------------------------------------------

#: Exit codes of the data commands, one per error class (most specific first); the README
#: has the table. 1 is "not found", as grep's 1 is "no match": an answer, not a failure.
NOT_FOUND: Final = 1
USAGE: Final = 2  # click's own code for bad usage; also arguments and requests refused as such
EXIT_CODES: Final[tuple[tuple[type[Exception], int], ...]] = (
    (AuthenticationError, 4),
    (PayloadTooLarge, 5),
    (InvalidTTL, 6),
    (NotJSON, 7),
    (Conflict, 8),
    (RateLimited, 9),
    (StoreUnavailable, 10),
    (StoreOpenError, 10),
    (CommandError, USAGE),
    (ValueError, USAGE),  # ConfigError, and arguments no server could accept
    (TypeError, USAGE),
    (StashError, 3),
)


def exit_code(exc: Exception) -> int:
    """The data commands' exit code for an error, by its class."""
    return next(code for kind, code in EXIT_CODES if isinstance(exc, kind))


@contextlib.contextmanager
def _reported() -> Iterator[None]:
    """Errors on stderr, one line, with the exit code of their class."""
    try:
        yield
    except StashError as exc:
        _fail(exc.wire, exit_code(exc))
    except (StoreOpenError, ValueError, TypeError) as exc:
        _fail(str(exc), exit_code(exc))


def _target_options(fn: Any) -> Any:  # noqa: ANN401 - click decorators are untyped
    options = [
        click.option(
            "--db",
            default=None,
            metavar="PATH",
            help="SQLite file to use in this process (embedded, the default). "
            "[STASH_DB; in the user data directory]",
        ),
        click.option(
            "--url",
            default=None,
            metavar="URL",
            help="Talk to a running stashd instead, e.g. redis://127.0.0.1:6380. [STASH_URL]",
        ),
        click.option(
            "--api-key",
            default=None,
            metavar="KEY",
            help="The key for that stashd (remote mode, its namespace). [STASH_API_KEY]",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@contextlib.contextmanager
def _stash(db: str | None, url: str | None, api_key: str | None) -> Iterator[Stash]:
    """The client the options name: remote with --url/--api-key, else the SQLite file.

    Without any of them, STASH_URL / STASH_API_KEY select remote as they do for Stash();
    otherwise it is the SQLite file (never the memory backend: it would be gone when this
    command exits).
    """
    with _reported():
        if db is not None and (url is not None or api_key is not None):
            msg = "--db is embedded mode, --url/--api-key remote mode: give one kind"
            raise ValueError(msg)
        if url is None and api_key is None and (db is not None or not remote_environment()):
            stash = Stash("sqlite", path=db)
        else:
            stash = Stash(url=url, api_key=api_key)
        with stash:
            yield stash


def _json_arg(text: str, what: str = "value") -> Any:  # noqa: ANN401 - any JSON value
    """A JSON argument; ``-`` reads it from stdin."""
    raw = sys.stdin.buffer.read() if text == "-" else text.encode("utf-8", "surrogateescape")
    return load_json(raw, what)


def _print_json(value: object) -> None:
    """One line of compact JSON on stdout (escaped where the text cannot be UTF-8)."""
    try:
        click.echo(dump_json(value))
    except UnicodeEncodeError:  # a lone surrogate, as "\\ud800" in the stored JSON
        click.echo(json.dumps(value, separators=(",", ":")))


_NOTHING: Final = object()  # get()'s default, telling a missing key from a stored null


def _missing(what: str, key: str) -> NoReturn:
    _fail(f"no {what} {key!r} (missing or expired)", NOT_FOUND)


_TTL_OPTION: Final = click.option(
    "--ttl",
    type=int,
    default=None,
    metavar="SECONDS",
    help="Lifetime in seconds. [the default TTL: STASH_DEFAULT_TTL, 3600]",
)


@stash_main.command(name="set")
@click.argument("key")
@click.argument("value", metavar="JSON")
@_TTL_OPTION
@_target_options
def set_(
    *, key: str, value: str, ttl: int | None, db: str | None, url: str | None, api_key: str | None
) -> None:
    """Store a JSON value under KEY (JSON "-" reads stdin); prints nothing.

    \b
    Example:
      stash set plan '{"step": 1, "of": 3}' --ttl 600
      curl -s https://api.example.com/state | stash set state - --ttl 3600
    """
    with _stash(db, url, api_key) as stash:
        stash.set(key, _json_arg(value), ttl=ttl)


@stash_main.command(name="get")
@click.argument("key")
@_target_options
def get(*, key: str, db: str | None, url: str | None, api_key: str | None) -> None:
    """Print the JSON under KEY; exit 1 when it is missing or expired.

    \b
    Example:
      stash get plan | jq .step
    """
    with _stash(db, url, api_key) as stash:
        value = stash.get(key, _NOTHING)
        if value is _NOTHING:
            _missing("key", key)
        _print_json(value)


@stash_main.command(name="stash")
@click.argument("value", metavar="JSON")
@_TTL_OPTION
@_target_options
def stash_(
    *, value: str, ttl: int | None, db: str | None, url: str | None, api_key: str | None
) -> None:
    """Store a JSON value under a new id and print the id alone (JSON "-" reads stdin).

    \b
    Example:
      ID=$(stash stash '{"task": "summarize"}' --ttl 3600)
      stash recall "$ID"
    """
    with _stash(db, url, api_key) as stash:
        click.echo(stash.stash(_json_arg(value), ttl=ttl))


@stash_main.command(name="recall")
@click.argument("memory_id", metavar="ID")
@click.option(
    "--meta", is_flag=True, help="Print memory_id, data, ttl_remaining, expires_at, version."
)
@_target_options
def recall(
    *, memory_id: str, meta: bool, db: str | None, url: str | None, api_key: str | None
) -> None:
    """Print the JSON stored under ID; exit 1 when it is missing or expired.

    \b
    Example:
      stash recall xK9mP2nQ
      stash recall xK9mP2nQ --meta | jq .ttl_remaining
    """
    with _stash(db, url, api_key) as stash:
        memory = stash.recall(memory_id, with_meta=True)
        if memory is None:
            _missing("memory", memory_id)
        if not meta:
            _print_json(memory.data)
            return
        _print_json(
            {
                "memory_id": memory.id,
                "data": memory.data,
                "ttl_remaining": memory.ttl_remaining,
                "expires_at": memory.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "version": memory.version,
            }
        )


#: UPDATE's errors in the words of ``stash update``'s flags.
CLI_WORDS: Final[dict[type[StashError], str]] = {
    EmptyUpdate: "stash update needs at least one of --data, --merge or --extend",
    DataAndMerge: "--data and --merge cannot be used together",
    BadExtend: "--extend must be a positive number of seconds, got {requested}",
}


@stash_main.command(name="update")
@click.argument("memory_id", metavar="ID")
@click.option("--data", default=None, metavar="JSON", help="Replace the value.")
@click.option("--merge", default=None, metavar="JSON", help="Merge-patch the value (RFC 7396).")
@click.option("--extend", type=int, default=None, metavar="SECONDS", help="Add to the TTL left.")
@click.option(
    "--if-version",
    type=int,
    default=None,
    metavar="N",
    help="Only if the version is N (else exit 8).",
)
@_target_options
def update(
    *,
    memory_id: str,
    data: str | None,
    merge: str | None,
    extend: int | None,
    if_version: int | None,
    db: str | None,
    url: str | None,
    api_key: str | None,
) -> None:
    """Replace or merge the JSON under ID, extend its TTL; print the seconds left.

    Exit 1 when ID is missing or expired, 8 when --if-version does not match.

    \b
    Example:
      stash update xK9mP2nQ --merge '{"progress": 0.5}' --extend 600
      stash update xK9mP2nQ --data '{"done": true}' --if-version 2
    """
    with _stash(db, url, api_key) as stash:
        changes: dict[str, Any] = {"extra_seconds": extend, "if_version": if_version}
        if data is not None:
            changes["data"] = _json_arg(data)
        if merge is not None:
            changes["merge"] = _json_arg(merge, "merge patch")
        with in_python_words(CLI_WORDS):
            left = stash.update(memory_id, **changes)
        if left is None:
            _missing("memory", memory_id)
        _print_json(left)


@stash_main.command(name="forget")
@click.argument("memory_ids", metavar="ID...", nargs=-1, required=True)
@_target_options
def forget(
    *, memory_ids: tuple[str, ...], db: str | None, url: str | None, api_key: str | None
) -> None:
    """Delete ids (or any keys); print how many existed.

    \b
    Example:
      stash forget xK9mP2nQ plan
    """
    with _stash(db, url, api_key) as stash:
        _print_json(stash.forget(*memory_ids))


@stash_main.command(name="ttl")
@click.argument("key")
@_target_options
def ttl(*, key: str, db: str | None, url: str | None, api_key: str | None) -> None:
    """Print the seconds KEY has left; exit 1 when it is missing or expired.

    \b
    Example:
      stash ttl plan
    """
    with _stash(db, url, api_key) as stash:
        left = stash.ttl(key)
        if left is None:
            _missing("key", key)
        _print_json(left)


@stash_main.command(name="ls")
@click.argument("pattern", default="*")
@_target_options
def ls(*, pattern: str, db: str | None, url: str | None, api_key: str | None) -> None:
    """Print the keys matching a glob PATTERN, one per line, a SCAN page at a time.

    Keys are printed as they are (like redis-cli --scan), not as JSON.

    \b
    Example:
      stash ls 'task:*'
      stash ls | wc -l
    """
    with _stash(db, url, api_key) as stash:
        for key in stash.keys(pattern):
            click.echo(key.encode("utf-8", "surrogateescape"))
