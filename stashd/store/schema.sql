-- The SQLite store's schema: one table of entries and the indexes its queries need.
--
-- Run inside BEGIN IMMEDIATE on every open, so it must stay idempotent (IF NOT EXISTS).
-- Other tables of the same file (the API key registry) belong to their own modules;
-- nothing here touches them, and nothing here uses file-wide settings such as
-- user_version that another module might also want.

-- One row per live (or expired but not yet swept) key.
--   id          the rowid: the sweep deletes by it. It counts across namespaces, so it
--               is never shown to a caller (its gaps would count other tenants' keys).
--   namespace   the caller's namespace; no query ever crosses it.
--   key         the key as bytes (Redis keys are binary-safe).
--   value       the value as bytes (JSON for STASH, anything for SET).
--   expires_at  absolute expiry in ms since the Unix epoch, so a TTL keeps counting
--               down across restarts instead of starting again.
--   version     1 on creation, plus one on every change of the data.
--   sweep_at    when the sweep may delete the row: expires_at rounded up to the next
--               multiple of 2^16 ms (~65 s). Moving a key's expiry inside one such
--               window (the same TTL set again, EXTEND, EXPIRE) leaves this column,
--               and so its index, untouched: a random-key write then dirties about half
--               as many pages (see SWEEP_WINDOW_BITS in sqlite.py for the measurement).
--   seq         the SCAN cursor, counted per namespace: a new key gets one more than
--               the namespace's largest, and a replaced key keeps its seq because writes
--               are upserts (INSERT ... ON CONFLICT DO UPDATE), so a key present for a
--               whole iteration is returned. A file from before this column gets it from
--               _migrate in sqlite.py (seq = id, which keeps every old cursor valid).
--   kind        what the value is (stashd.types.Kind: 1 string, 2 hash, 3 list, ...);
--               a file from before this column gets it from _migrate, every row a string.
CREATE TABLE IF NOT EXISTS entries (
    id         INTEGER PRIMARY KEY,
    namespace  TEXT    NOT NULL,
    key        BLOB    NOT NULL,
    value      BLOB    NOT NULL,
    expires_at INTEGER NOT NULL,
    version    INTEGER NOT NULL,
    sweep_at   INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    kind       INTEGER NOT NULL DEFAULT 1,
    UNIQUE (namespace, key)
);

-- SCAN pages through one namespace in seq order, "namespace = ? AND seq > ? ORDER BY
-- seq" as a range search, and a new key's seq is the end of its namespace's range. It
-- replaced an index on (namespace) alone, which _migrate drops: the table keeps two.
CREATE INDEX IF NOT EXISTS entries_namespace_seq ON entries (namespace, seq);

-- The sweep deletes "sweep_at <= now" a few hundred rows at a time, oldest first; every
-- such row has expired (expires_at < sweep_at).
--
-- Not partial, on purpose. A partial expiry index pays off where most rows never
-- expire: Redis on SQLite indexes only the keys that have a TTL ("WHERE expires_at IS
-- NOT NULL") and so skips persistent keys. In Stash every row has an expiry (there is
-- no PERSIST), so that clause would select every row and only make each query prove it
-- applies. A clause on the time itself cannot work either: an index's WHERE must be a
-- constant expression, and "already expired" changes with the clock. What keeps this
-- index cheap is what it holds: the coarse sweep_at, not the exact expiry.
CREATE INDEX IF NOT EXISTS entries_sweep ON entries (sweep_at);

-- What each namespace holds, for storage quotas: its rows (expired ones too, until the
-- sweep deletes them) and their bytes, each row counting length(key) + length(value)
-- (stashd.quota.entry_bytes; both columns hold BLOBs, whose length is in bytes). The
-- triggers below keep it exact on every insert, update and delete of entries, whoever
-- makes them: a batch, the direct path, the sweep, FLUSHDB, another process. A file
-- from before this table gets it filled from its rows by _add_usage in sqlite.py, in
-- the same transaction that creates it.
CREATE TABLE IF NOT EXISTS usage (
    namespace TEXT    PRIMARY KEY,
    keys      INTEGER NOT NULL,
    bytes     INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TRIGGER IF NOT EXISTS usage_insert AFTER INSERT ON entries
BEGIN
    INSERT INTO usage (namespace, keys, bytes)
    VALUES (NEW.namespace, 1, length(NEW.key) + length(NEW.value))
    ON CONFLICT (namespace) DO UPDATE SET
        keys = keys + 1, bytes = bytes + excluded.bytes;
END;

-- Writes never move a row to another key or namespace, so only the value's length can
-- change; a rewrite of the same length (most of them) costs the trigger nothing.
CREATE TRIGGER IF NOT EXISTS usage_update AFTER UPDATE OF value ON entries
WHEN length(NEW.value) <> length(OLD.value)
BEGIN
    UPDATE usage SET bytes = bytes + length(NEW.value) - length(OLD.value)
    WHERE namespace = NEW.namespace;
END;

CREATE TRIGGER IF NOT EXISTS usage_delete AFTER DELETE ON entries
BEGIN
    UPDATE usage SET keys = keys - 1, bytes = bytes - length(OLD.key) - length(OLD.value)
    WHERE namespace = OLD.namespace;
END;
