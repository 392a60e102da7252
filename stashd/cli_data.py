"""The ``stash`` data commands (set, get, stash, recall, update, forget, ttl, ls), over Stash.

Each opens a :class:`stashd.client.Stash` (the SQLite file in this process, or a
running stashd), makes one call, prints JSON on stdout, and turns an error into one
line on stderr with the exit code of its class.
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import TYPE_CHECKING, Any, Final, NoReturn

import click

from stashd.cli_exit import STORE_UNAVAILABLE, USAGE, fail
from stashd.client import Stash, in_python_words
from stashd.clientmode import remote_environment
from stashd.errors import (
    AuthenticationError,
    BadExtend,
    CommandError,
    Conflict,
    DataAndMerge,
    EmptyUpdate,
    InvalidTTL,
    NoAuth,
    NotJSON,
    PayloadTooLarge,
    RateLimited,
    StashError,
    StoreUnavailable,
    WrongPass,
)
from stashd.jsontext import dump_json, load_json
from stashd.store.base import StoreOpenError

if TYPE_CHECKING:
    from collections.abc import Iterator

#: Exit codes of the data commands, one per error class (most specific first); the README
#: has the table. 1 is "not found", as grep's 1 is "no match": an answer, not a failure.
NOT_FOUND: Final = 1
EXIT_CODES: Final[tuple[tuple[type[Exception], int], ...]] = (
    (AuthenticationError, 4),
    (PayloadTooLarge, 5),
    (InvalidTTL, 6),
    (NotJSON, 7),
    (Conflict, 8),
    (RateLimited, 9),
    (StoreUnavailable, STORE_UNAVAILABLE),
    (StoreOpenError, STORE_UNAVAILABLE),
    (CommandError, USAGE),
    (ValueError, USAGE),  # ConfigError, and arguments no server could accept
    (TypeError, USAGE),
    (StashError, 3),
)


def exit_code(exc: Exception) -> int:
    """The data commands' exit code for an error, by its class."""
    return next(code for kind, code in EXIT_CODES if isinstance(exc, kind))


@contextlib.contextmanager
def reported() -> Iterator[None]:
    """Errors on stderr, one line, with the exit code of their class."""
    try:
        yield
    except StashError as exc:
        # A class the CLI words its own way (or a kind of one: HELLO's NOAUTH is a NOAUTH).
        text = next((CLI_WORDS[k] for k in type(exc).__mro__ if k in CLI_WORDS), None)
        fail(exc.wire if text is None else f"{exc.code} {exc.worded(text)}", exit_code(exc))
    except (StoreOpenError, ValueError, TypeError) as exc:
        fail(str(exc), exit_code(exc))


def target_options(fn: Any) -> Any:  # noqa: ANN401 - click decorators are untyped
    """--db, --url and --api-key: which store or daemon a command works on."""
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
def _stash(
    db: str | None, url: str | None, api_key: str | None, *, reads_only: bool = False
) -> Iterator[Stash]:
    """The client the options name: remote with --url/--api-key, else the SQLite file.

    Without any of them, STASH_URL / STASH_API_KEY select remote as they do for Stash();
    otherwise it is the SQLite file (never the memory backend: it would be gone when this
    command exits). A command that ``reads_only`` never creates the file or its folders:
    a missing file is exit 10 naming the path, not an empty database and "not found".
    """
    with reported(), Stash(**target(db, url, api_key, reads_only=reads_only)) as stash:
        yield stash


def target(
    db: str | None, url: str | None, api_key: str | None, *, reads_only: bool = False
) -> dict[str, Any]:
    """The arguments of the client (Stash or AsyncStash) that --db, --url, --api-key name."""
    if db is not None and (url is not None or api_key is not None):
        msg = "--db is embedded mode, --url/--api-key remote mode: give one kind"
        raise ValueError(msg)
    if url is None and api_key is None and (db is not None or not remote_environment()):
        return {"backend": "sqlite", "path": db, "create": not reads_only}
    return {"url": url, "api_key": api_key}


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
    fail(f"no {what} {key!r} (missing or expired)", NOT_FOUND)


_TTL_OPTION: Final = click.option(
    "--ttl",
    type=int,
    default=None,
    metavar="SECONDS",
    help="Lifetime in seconds. [the default TTL: STASH_DEFAULT_TTL, 3600]",
)


@click.command(name="set")
@click.argument("key")
@click.argument("value", metavar="JSON")
@_TTL_OPTION
@target_options
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


@click.command(name="get")
@click.argument("key")
@target_options
def get(*, key: str, db: str | None, url: str | None, api_key: str | None) -> None:
    """Print the JSON under KEY; exit 1 when it is missing or expired.

    \b
    Example:
      stash get plan | jq .step
    """
    with _stash(db, url, api_key, reads_only=True) as stash:
        value = stash.get(key, _NOTHING)
        if value is _NOTHING:
            _missing("key", key)
        _print_json(value)


@click.command(name="stash")
@click.argument("value", metavar="JSON")
@_TTL_OPTION
@target_options
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


@click.command(name="recall")
@click.argument("memory_id", metavar="ID")
@click.option(
    "--meta", is_flag=True, help="Print memory_id, data, ttl_remaining, expires_at, version."
)
@target_options
def recall(
    *, memory_id: str, meta: bool, db: str | None, url: str | None, api_key: str | None
) -> None:
    """Print the JSON stored under ID; exit 1 when it is missing or expired.

    \b
    Example:
      stash recall xK9mP2nQ
      stash recall xK9mP2nQ --meta | jq .ttl_remaining
    """
    with _stash(db, url, api_key, reads_only=True) as stash:
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
    NoAuth: "this daemon needs an API key: pass --api-key or set STASH_API_KEY",
    WrongPass: "the API key was refused: check --api-key or STASH_API_KEY",
}


@click.command(name="update")
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
@target_options
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


@click.command(name="forget")
@click.argument("memory_ids", metavar="ID...", nargs=-1, required=True)
@target_options
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


@click.command(name="ttl")
@click.argument("key")
@target_options
def ttl(*, key: str, db: str | None, url: str | None, api_key: str | None) -> None:
    """Print the seconds KEY has left; exit 1 when it is missing or expired.

    \b
    Example:
      stash ttl plan
    """
    with _stash(db, url, api_key, reads_only=True) as stash:
        left = stash.ttl(key)
        if left is None:
            _missing("key", key)
        _print_json(left)


@click.command(name="ls")
@click.argument("pattern", default="*")
@target_options
def ls(*, pattern: str, db: str | None, url: str | None, api_key: str | None) -> None:
    """Print the keys matching a glob PATTERN, one per line, a SCAN page at a time.

    Keys are printed as they are (like redis-cli --scan), not as JSON.

    \b
    Example:
      stash ls 'task:*'
      stash ls | wc -l
    """
    with _stash(db, url, api_key, reads_only=True) as stash:
        for key in stash.keys(pattern):
            click.echo(key.encode("utf-8", "surrogateescape"))


#: The commands this module adds to ``stash``.
COMMANDS: Final[tuple[click.Command, ...]] = (set_, get, stash_, recall, update, forget, ttl, ls)
