"""Where a client's data is: a store opened in this process, or a stashd, from arguments and env.

The arguments decide first (``backend``, ``path`` or ``redis_url`` mean embedded, ``url``
or ``api_key`` remote, and both kinds at once is an error), then ``STASH_URL`` /
``STASH_API_KEY`` from the environment or a ``.env`` file; else it is embedded, on the
daemon's settings (:mod:`stashd.config`). Limits given to a remote client are refused:
the daemon's apply.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from dotenv import dotenv_values

from stashd.config import DEFAULT_REDIS_URL, load
from stashd.store import open_store
from stashd.tenancy import open_limits

if TYPE_CHECKING:
    from stashd.store.base import Store
    from stashd.types import Limits

#: Where remote mode connects when neither ``url`` nor ``STASH_URL`` says: stashd's default.
DEFAULT_URL: Final = "redis://127.0.0.1:6380"


@dataclass(frozen=True, slots=True)
class Remote:
    """A running stashd: its URL, and the key that names the namespace."""

    url: str
    api_key: str | None


@dataclass(frozen=True, slots=True)
class Embedded:
    """A store opened in this process, with the limits the settings give."""

    store: Store
    limits: Limits


def remote_environment() -> dict[str, str]:
    """STASH_URL and STASH_API_KEY from the environment over a ``.env`` file, as config reads.

    An empty variable counts as unset, as an empty ``STASH_URL=`` line usually means.
    """
    names = ("STASH_URL", "STASH_API_KEY")
    dotenv = dotenv_values(".env") if Path(".env").is_file() else {}
    found = {n: v for n in names if (v := dotenv.get(n))}
    found.update({n: v for n in names if (v := os.environ.get(n))})
    return found


def choose(
    backend: str | None,
    path: str | os.PathLike[str] | None,
    url: str | None,
    api_key: str | None,
    settings: dict[str, Any],
    *,
    create: bool = True,
) -> Remote | Embedded:
    """Remote or embedded, from the arguments first and the environment second.

    ``create=False`` opens an existing SQLite file only (see :class:`SQLiteStore`).
    """
    embedded = backend is not None or path is not None or settings.get("redis_url") is not None
    remote = url is not None or api_key is not None
    if embedded and remote:
        msg = (
            "backend, path and redis_url choose embedded mode, url and api_key remote mode: "
            "give one kind"
        )
        raise ValueError(msg)
    env = {} if embedded else remote_environment()
    if remote or env:
        given = sorted(name for name, value in settings.items() if value is not None)
        if given:
            msg = f"{', '.join(given)}: in remote mode the daemon's settings apply"
            raise ValueError(msg)
        return Remote(
            url or env.get("STASH_URL") or DEFAULT_URL,
            api_key if api_key is not None else env.get("STASH_API_KEY"),
        )
    if backend == "memory" and path is not None:
        msg = "path names a SQLite file; the memory backend has none"
        raise ValueError(msg)
    flags = dict(settings)
    # A path means SQLite, and a Redis URL Redis, even when STASH_BACKEND says otherwise:
    # the argument is explicit.
    if backend is None and path is not None:
        backend = "sqlite"
    elif backend is None and settings.get("redis_url") is not None:
        backend = "redis"
    flags["backend"] = backend
    flags["db"] = None if path is None else os.fspath(path)
    config = load(flags)
    store = open_store(
        config.backend,
        path=config.db_path,
        synchronous=config.sqlite_synchronous,
        redis_url=config.redis_url or DEFAULT_REDIS_URL,
        redis_cluster=config.redis_cluster,
        create=create,
    )
    return Embedded(store, open_limits(config))
