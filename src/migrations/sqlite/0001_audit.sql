-- The audit trail: one row per attributed action. Append-only, enforced by
-- triggers: the only update allowed is settling the outcome of an open intent.
CREATE TABLE IF NOT EXISTS audit (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    at                TEXT    NOT NULL,
    actor             TEXT    NOT NULL,
    role              TEXT    NOT NULL,
    action            TEXT    NOT NULL,
    target_user_id    TEXT,
    target_user_email TEXT,
    key_id            TEXT,
    key_name          TEXT,
    requested_expiry  TEXT,
    reason            TEXT,
    related_key_id    TEXT,
    outcome           TEXT    NOT NULL,
    upstream_status   INTEGER,
    error             TEXT,
    request_id        TEXT,
    finished_at       TEXT
);

CREATE INDEX IF NOT EXISTS audit_actor ON audit (actor);
CREATE INDEX IF NOT EXISTS audit_target ON audit (target_user_id);
CREATE INDEX IF NOT EXISTS audit_key ON audit (key_id);

CREATE TRIGGER IF NOT EXISTS audit_no_delete
BEFORE DELETE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only');
END;

CREATE TRIGGER IF NOT EXISTS audit_settle_only
BEFORE UPDATE ON audit
WHEN OLD.outcome <> 'pending'
BEGIN
    SELECT RAISE(ABORT, 'a settled audit entry cannot change');
END;
