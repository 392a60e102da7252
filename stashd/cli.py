"""The ``stashd`` and ``stash`` entry points, and the daemon's options (``stash serve``).

A thin click layer: options become a Config (flags > env > .env > defaults) and the
daemon is :mod:`stashd.app`. The other ``stash`` commands are defined by concept and
added here: the data commands in :mod:`stashd.cli_data`, ``keys`` and ``tiers`` in
:mod:`stashd.cli_keys`.
"""

from __future__ import annotations

from typing import Any

import click

from stashd import cli_data, cli_keys, cli_mcp, log, outputlimit
from stashd._version import __version__
from stashd.cli_exit import CANNOT_LISTEN, STORE_UNAVAILABLE, USAGE, fail
from stashd.config import (
    AUTH_MODES,
    BACKENDS,
    LOG_FORMATS,
    LOG_LEVELS,
    OVER_MAX_TTL,
    SQLITE_SYNCHRONOUS,
    ConfigError,
    load,
)
from stashd.registry import RegistryError
from stashd.store.base import StoreOpenError


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
            "--over-max-ttl",
            type=click.Choice(OVER_MAX_TTL),
            default=None,
            help="A TTL past --max-ttl: refuse it, or clamp it to the maximum (and PERSIST "
            "sets the maximum), for libraries whose defaults ask for longer. "
            "[STASH_OVER_MAX_TTL; refuse]",
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
            "--mcp/--no-mcp",
            default=None,
            help="Serve MCP (streamable HTTP) at /mcp of the HTTP API. [STASH_MCP; on]",
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
            "--lua-time-limit",
            type=int,
            default=None,
            help="Milliseconds a Lua script may run before it is stopped. "
            "[STASH_LUA_TIME_LIMIT; 5000]",
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
        fail(str(exc), USAGE, program="stashd")
    log.configure(config.log_level, config.log_format)
    # The daemon's modules (aiohttp, both doors) load only to serve: a ``stash`` command
    # starts in about half the time without them.
    from stashd import app  # noqa: PLC0415

    try:
        app.run(config)
    except ConfigError as exc:  # a setting this machine cannot give (the open-file limit)
        fail(str(exc), USAGE, program="stashd")
    except app.ListenError as exc:
        fail(str(exc), CANNOT_LISTEN, program="stashd")
    except (RegistryError, StoreOpenError) as exc:
        fail(str(exc), STORE_UNAVAILABLE, program="stashd")


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


@click.group(
    name="stash",
    commands=[*cli_data.COMMANDS, *cli_keys.COMMANDS, *cli_mcp.COMMANDS],
    context_settings={"help_option_names": ["-h", "--help"]},
)
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
