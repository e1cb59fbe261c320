-- What a key could do, recorded with every key and allowlist write: the
-- user's level, ACLs and API allowlist as Vultr reported them at the time.
ALTER TABLE audit ADD COLUMN level TEXT;
ALTER TABLE audit ADD COLUMN acls TEXT;
ALTER TABLE audit ADD COLUMN allowlist TEXT;
CREATE INDEX IF NOT EXISTS audit_level ON audit (level);

-- Adding an allowlist entry can wait for a second person: the approvals
-- table is rebuilt with 'user.allowlist.add' among its actions and the
-- entry it would add (SQLite cannot change a CHECK in place).
CREATE TABLE approvals_v3 (
    id           TEXT    PRIMARY KEY,
    action       TEXT    NOT NULL CHECK (action IN ('key.create', 'key.rotate', 'grant.create', 'user.api_access', 'user.reinstate', 'user.allowlist.add')),
    user_id      TEXT    NOT NULL,
    user_email   TEXT,
    key_id       TEXT,
    key_name     TEXT,
    expire       INTEGER NOT NULL,
    date_expire  TEXT,
    reason       TEXT,
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
    -- The allowlist entry a 'user.allowlist.add' request would add (CIDR).
    subnet       TEXT,
    CHECK (decided_by IS NULL OR lower(decided_by) <> lower(requested_by)),
    CHECK (state IN ('pending', 'expired', 'withdrawn') OR decided_by IS NOT NULL)
);
INSERT INTO approvals_v3 (id, action, user_id, user_email, key_id, key_name, expire, date_expire, reason, why, requested_by, requested_ms, expires_ms, state, decided_by, decided_ms, comment, executed_ms, result_id)
    SELECT id, action, user_id, user_email, key_id, key_name, expire, date_expire, reason, why, requested_by, requested_ms, expires_ms, state, decided_by, decided_ms, comment, executed_ms, result_id FROM approvals;
DROP TABLE approvals;
ALTER TABLE approvals_v3 RENAME TO approvals;
CREATE INDEX IF NOT EXISTS approvals_state ON approvals (state);
