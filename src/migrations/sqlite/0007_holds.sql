-- Offboarding leaves a hold: while it stands, nothing may give the user a
-- key or switch their API access on. Reinstating removes the row (the audit
-- keeps who placed and lifted it).
CREATE TABLE IF NOT EXISTS holds (
    user_id    TEXT    PRIMARY KEY,
    user_email TEXT,
    placed_by  TEXT    NOT NULL,
    placed_ms  INTEGER NOT NULL,
    reason     TEXT,
    group_id   INTEGER
);

-- A create whose answer was lost (unknown outcome): settled later from the
-- user's key list, as created (the key found, never shown to anyone) or not
-- created (no such key after the bound). Names and ids only, never a secret.
CREATE TABLE IF NOT EXISTS lost_creates (
    audit_id   INTEGER PRIMARY KEY,
    user_id    TEXT    NOT NULL,
    key_name   TEXT    NOT NULL,
    started_ms INTEGER NOT NULL,
    state      TEXT    NOT NULL CHECK (state IN ('open', 'created', 'not_created')),
    key_id     TEXT,
    settled_ms INTEGER
);
CREATE INDEX IF NOT EXISTS lost_creates_user ON lost_creates (user_id, state);
