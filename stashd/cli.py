"""The ``stashd`` (daemon) and ``stash`` (serve, and later data and key commands) CLIs.

A thin click layer: options become a Config (flags > env > .env > defaults) and the
work is done by :mod:`stashd.app`.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from stashd import __version__, app, log
from stashd.config import (
    AUTH_MODES,
    BACKENDS,
    LOG_FORMATS,
    LOG_LEVELS,
    SQLITE_SYNCHRONOUS,
    ConfigError,
    load,
)
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
            "--max-payload-bytes",
            type=int,
            default=None,
            help="Largest value accepted. [STASH_MAX_PAYLOAD_BYTES; 1048576]",
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
    except StoreOpenError as exc:
        click.echo(f"stashd: {exc}", err=True)
        sys.exit(1)


@click.command(name="stashd", context_settings={"help_option_names": ["-h", "--help"]})
@_serve_options
@click.version_option(__version__, prog_name="stashd")
def stashd_main(**flags: Any) -> None:  # noqa: ANN401
    r"""Run the Stash daemon: RESP on 127.0.0.1:6380, every key expiring.

    \b
    Example:
      stashd --port 6380 --default-ttl 600
      redis-cli -p 6380 STASH '{"task":"summarize"}' EX 3600
    """
    _serve(**flags)


@click.group(name="stash", context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="stash")
def stash_main() -> None:
    r"""Stash: working memory for AI agents, JSON that always expires.

    \b
    Example:
      stash serve --port 6380
    """


@stash_main.command(name="serve")
@_serve_options
def serve(**flags: Any) -> None:  # noqa: ANN401
    r"""Run the daemon (the same as ``stashd``).

    \b
    Example:
      stash serve --port 6380 --log-format json
    """
    _serve(**flags)
