-- Offboarding leaves a hold: while it stands, nothing may give the user a
-- key or switch their API access on. Reinstating removes the row (the audit
-- keeps who placed and lifted it).
CREATE TABLE IF NOT EXISTS holds (
    user_id    TEXT   PRIMARY KEY,
    user_email TEXT,
    placed_by  TEXT   NOT NULL,
    placed_ms  BIGINT NOT NULL,
    reason     TEXT,
    group_id   BIGINT
);

-- A create whose answer was lost (unknown outcome): settled later from the
-- user's key list, as created (the key found, never shown to anyone) or not
-- created (no such key after the bound). Names and ids only, never a secret.
CREATE TABLE IF NOT EXISTS lost_creates (
    audit_id   BIGINT PRIMARY KEY,
    user_id    TEXT   NOT NULL,
    key_name   TEXT   NOT NULL,
    started_ms BIGINT NOT NULL,
    state      TEXT   NOT NULL CHECK (state IN ('open', 'created', 'not_created')),
    key_id     TEXT,
    settled_ms BIGINT
);
CREATE INDEX IF NOT EXISTS lost_creates_user ON lost_creates (user_id, state);

-- Offboardings as durable jobs: one row per run (its audit group), so any
-- replica can show its progress and a run cut short by a stop shows as
-- unfinished, to be finished from the user's page.
CREATE TABLE IF NOT EXISTS offboardings (
    group_id     BIGINT PRIMARY KEY,
    user_id      TEXT   NOT NULL,
    started_by   TEXT   NOT NULL,
    state        TEXT   NOT NULL CHECK (state IN ('running', 'done', 'unfinished')),
    started_ms   BIGINT NOT NULL,
    heartbeat_ms BIGINT NOT NULL,
    keys_total   BIGINT,
    keys_done    BIGINT NOT NULL DEFAULT 0,
    live         BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS offboardings_user ON offboardings (user_id, group_id);

-- Reinstating an offboarded user can wait for a second person too.
ALTER TABLE approvals DROP CONSTRAINT IF EXISTS approvals_action_check;
ALTER TABLE approvals ADD CONSTRAINT approvals_action_check
    CHECK (action IN ('key.create', 'key.rotate', 'grant.create', 'user.api_access', 'user.reinstate'));
