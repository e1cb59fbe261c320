-- Two-person approval: a risky action waits here until a second person
-- decides. The parameters of the action, never a secret.
CREATE TABLE IF NOT EXISTS approvals (
    id           TEXT    PRIMARY KEY,
    action       TEXT    NOT NULL CHECK (action IN ('key.create', 'key.rotate', 'grant.create', 'user.api_access')),
    user_id      TEXT    NOT NULL,
    user_email   TEXT,
    key_id       TEXT,
    key_name     TEXT,
    expire       BOOLEAN NOT NULL,
    date_expire  TEXT,
    reason       TEXT,
    -- Which rule asked for a second person, in words.
    why          TEXT    NOT NULL,
    requested_by TEXT    NOT NULL,
    requested_ms BIGINT  NOT NULL,
    expires_ms   BIGINT  NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN ('pending', 'approved', 'denied', 'expired', 'executing', 'done', 'withdrawn')),
    decided_by   TEXT,
    decided_ms   BIGINT,
    comment      TEXT,
    executed_ms  BIGINT,
    result_id    TEXT,
    -- Never the requester's own decision, whatever the application does.
    CHECK (decided_by IS NULL OR lower(decided_by) <> lower(requested_by)),
    CHECK (state IN ('pending', 'expired', 'withdrawn') OR decided_by IS NOT NULL)
);
CREATE INDEX IF NOT EXISTS approvals_state ON approvals (state);
