"""The settings of the SQLite backend: the default backend, --db and --sqlite-synchronous."""

from __future__ import annotations

from pathlib import Path

import platformdirs
import pytest

from stashd.app import make_store
from stashd.config import Config, ConfigError, load
from stashd.store.memory import MemoryStore
from stashd.store.sqlite import SQLiteStore


def test_sqlite_is_the_default_backend_in_the_user_data_directory(tmp_path: Path) -> None:
    """Without settings, entries go to stash.db in the platform's user data directory."""
    config = load({}, env={}, dotenv_path=tmp_path / "none")
    assert config.backend == "sqlite"
    assert config.sqlite_synchronous == "normal"
    expected = Path(platformdirs.user_data_dir("stash", appauthor=False)) / "stash.db"
    assert config.db_path == expected
    store = make_store(config)
    assert isinstance(store, SQLiteStore)
    assert store.path == expected
    assert store.synchronous == "normal"


def test_flags_and_environment_choose_file_and_sync(tmp_path: Path) -> None:
    """STASH_DB and STASH_SQLITE_SYNCHRONOUS are read, flags win, and the store follows."""
    env = {"STASH_DB": str(tmp_path / "env.db"), "STASH_SQLITE_SYNCHRONOUS": "full"}
    config = load({}, env=env, dotenv_path=tmp_path / "none")
    assert (config.db_path, config.sqlite_synchronous) == (tmp_path / "env.db", "full")
    flags = {"db": str(tmp_path / "flag.db"), "sqlite_synchronous": "normal"}
    config = load(flags, env=env, dotenv_path=tmp_path / "none")
    store = make_store(config)
    assert isinstance(store, SQLiteStore)
    assert (store.path, store.synchronous) == (tmp_path / "flag.db", "normal")
    assert isinstance(make_store(Config(backend="memory")), MemoryStore)


def test_an_unknown_sync_mode_is_refused_naming_it() -> None:
    """A typo in the sync mode stops the start with the allowed values and the value given."""
    with pytest.raises(
        ConfigError, match="sqlite_synchronous must be one of normal, full, got 'off'"
    ):
        Config(sqlite_synchronous="off")
    with pytest.raises(
        ConfigError, match="backend must be one of sqlite, memory, redis, got 'postgres'"
    ):
        Config(backend="postgres")
