-- The API key registry: users with their tier, and the digests of their keys.
--
-- Lives in the same SQLite file as the data (--db), next to the store's own tables; it
-- touches nothing else in the file and no file-wide setting (user_version). Run inside
-- BEGIN IMMEDIATE on every open, so every statement is idempotent (IF NOT EXISTS).
-- A plaintext key is never stored: only its SHA-256 digest, which is all a lookup needs.

-- One row per user. All of a user's keys share the user's namespace ("user:<name>") and
-- tier, so a key can be rotated without losing data or changing limits.
--   tier        free, pro or enterprise: names a row of the daemon's tier table.
--   created_at  ms since the Unix epoch.
CREATE TABLE IF NOT EXISTS api_users (
    name       TEXT    PRIMARY KEY,
    tier       TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);

-- One row per key, revoked ones included (their digests stay, so a revoked key is told
-- apart from an unknown one in the logs).
--   key_id      public and short ("key_" + 12 base62): what `stash keys revoke` takes.
--   digest      SHA-256 of the key; UNIQUE, so AUTH is one index lookup.
--   revoked_at  NULL while the key is valid; ms since the Unix epoch once revoked.
CREATE TABLE IF NOT EXISTS api_keys (
    key_id     TEXT    PRIMARY KEY,
    digest     BLOB    NOT NULL UNIQUE,
    user_name  TEXT    NOT NULL REFERENCES api_users (name),
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);

-- `stash keys list` groups keys by user.
CREATE INDEX IF NOT EXISTS api_keys_user ON api_keys (user_name);

-- A running daemon asks every second which keys were revoked lately, to close their
-- connections; only revoked keys are in this index, so the question stays cheap.
CREATE INDEX IF NOT EXISTS api_keys_revoked ON api_keys (revoked_at)
    WHERE revoked_at IS NOT NULL;
