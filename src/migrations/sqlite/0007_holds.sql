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

-- Offboardings as durable jobs: one row per run (its audit group), so any
-- replica can show its progress and a run cut short by a stop shows as
-- unfinished, to be finished from the user's page.
CREATE TABLE IF NOT EXISTS offboardings (
    group_id     INTEGER PRIMARY KEY,
    user_id      TEXT    NOT NULL,
    started_by   TEXT    NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN ('running', 'done', 'unfinished')),
    started_ms   INTEGER NOT NULL,
    heartbeat_ms INTEGER NOT NULL,
    keys_total   INTEGER,
    keys_done    INTEGER NOT NULL DEFAULT 0,
    live         INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS offboardings_user ON offboardings (user_id, group_id);

-- Reinstating an offboarded user can wait for a second person too: the
-- approvals table is rebuilt with 'user.reinstate' among its actions
-- (SQLite cannot change a CHECK in place).
CREATE TABLE approvals_v2 (
    id           TEXT    PRIMARY KEY,
    action       TEXT    NOT NULL CHECK (action IN ('key.create', 'key.rotate', 'grant.create', 'user.api_access', 'user.reinstate')),
    user_id      TEXT    NOT NULL,
    user_email   TEXT,
    key_id       TEXT,
    key_name     TEXT,
    expire       INTEGER NOT NULL,
    date_expire  TEXT,
    reason       TEXT,
    -- Which rule asked for a second person, in words.
    why          TEXT    NOT NULL,
    requested_by TEXT    NOT NULL,
    requested_ms INTEGER  NOT NULL,
    expires_ms   INTEGER  NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN ('pending', 'approved', 'denied', 'expired', 'executing', 'done', 'withdrawn')),
    decided_by   TEXT,
    decided_ms   INTEGER,
    comment      TEXT,
    executed_ms  INTEGER,
    result_id    TEXT,
    -- Never the requester's own decision, whatever the application does.
    CHECK (decided_by IS NULL OR lower(decided_by) <> lower(requested_by)),
    CHECK (state IN ('pending', 'expired', 'withdrawn') OR decided_by IS NOT NULL)
);
INSERT INTO approvals_v2 SELECT * FROM approvals;
DROP TABLE approvals;
ALTER TABLE approvals_v2 RENAME TO approvals;
CREATE INDEX IF NOT EXISTS approvals_state ON approvals (state);
