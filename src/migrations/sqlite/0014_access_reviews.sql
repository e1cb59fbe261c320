-- Access reviews (issue 35). Expand-only: new tables, so the previous
-- release keeps serving beside this one (it never reads them; their audit
-- actions read there as "unknown (newer version)").
--
-- A review: its rules, its state, and the audit entry (review.start) every
-- later entry of the review links to.
CREATE TABLE IF NOT EXISTS reviews (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    -- The scope in its one normalised spelling ("anywhere,root"): at most
    -- one review is open per scope (the index below).
    scope            TEXT    NOT NULL,
    deadline_ms      INTEGER NOT NULL,
    default_decision TEXT    NOT NULL CHECK (default_decision IN ('keep', 'revoke', 'recommended')),
    reviewers        TEXT    NOT NULL CHECK (reviewers IN ('owner', 'operators', 'owner,operators')),
    inactive_days    INTEGER NOT NULL CHECK (inactive_days > 0),
    reason           TEXT,
    started_by       TEXT    NOT NULL,
    started_ms       INTEGER NOT NULL,
    group_id         INTEGER NOT NULL,
    -- snapshot: its items being read; open: deciding; closing: decisions
    -- being applied (a durable job); closed; failed: no snapshot was taken.
    state            TEXT    NOT NULL CHECK (state IN ('snapshot', 'open', 'closing', 'closed', 'failed')),
    users_total      INTEGER NOT NULL DEFAULT 0,
    users_read       INTEGER NOT NULL DEFAULT 0,
    -- Why a snapshot failed, in words.
    error            TEXT,
    -- Who ended it (an operator, or "deadline"), and when.
    closed_by        TEXT,
    closed_ms        INTEGER,
    finished_ms      INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS reviews_one_open_per_scope
    ON reviews (scope) WHERE state IN ('snapshot', 'open', 'closing');

-- One item per key in scope when the review started: the snapshot, the
-- recommendation, the decision that counts (the last), and what applying it did.
CREATE TABLE IF NOT EXISTS review_items (
    review_id             INTEGER NOT NULL REFERENCES reviews (id),
    key_id                TEXT    NOT NULL,
    user_id               TEXT    NOT NULL,
    user_email            TEXT,
    user_name             TEXT,
    key_name              TEXT,
    key_tail              TEXT,
    level                 TEXT    NOT NULL,
    acls                  TEXT    NOT NULL,
    -- anywhere, allowlisted or unknown.
    reach                 TEXT    NOT NULL,
    expires               TEXT,
    created               TEXT,
    last_activity         TEXT,
    recommendation        TEXT    NOT NULL CHECK (recommendation IN ('keep', 'revoke')),
    recommendation_reason TEXT    NOT NULL,
    -- Root-equivalent or usable from anywhere: its owner's word alone does not keep it.
    needs_other           INTEGER NOT NULL,
    decision              TEXT    CHECK (decision IS NULL OR decision IN ('keep', 'revoke')),
    decided_by            TEXT,
    decided_role          TEXT,
    decided_ms            INTEGER,
    decision_reason       TEXT,
    -- NULL until applied: kept, revoked, gone, offboarded, unknown or failed.
    outcome               TEXT    CHECK (outcome IS NULL OR outcome IN ('kept', 'revoked', 'gone', 'offboarded', 'unknown', 'failed')),
    -- The decision applied (keep or revoke), and whose it was: the decider, or "default".
    applied_decision      TEXT,
    applied_by            TEXT,
    outcome_detail        TEXT,
    upstream_status       INTEGER,
    applied_ms            INTEGER,
    attempts              INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (review_id, key_id),
    CHECK (decision IS NULL OR decided_by IS NOT NULL),
    CHECK (NOT (needs_other = 1 AND decision = 'keep' AND user_email IS NOT NULL
                AND lower(decided_by) = lower(user_email)))
);
CREATE INDEX IF NOT EXISTS review_items_owner ON review_items (user_email);

-- Every decision ever made, in order: the last one per item is the item's.
CREATE TABLE IF NOT EXISTS review_decisions (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    review_id    INTEGER NOT NULL,
    key_id       TEXT    NOT NULL,
    decision     TEXT    NOT NULL CHECK (decision IN ('keep', 'revoke')),
    decided_by   TEXT    NOT NULL,
    decided_role TEXT    NOT NULL,
    decided_ms   INTEGER NOT NULL,
    reason       TEXT
);
CREATE INDEX IF NOT EXISTS review_decisions_item ON review_decisions (review_id, key_id);

-- Reminders: one row per (review, kind, recipient), written before sending,
-- so each goes out once across replicas.
CREATE TABLE IF NOT EXISTS review_notices (
    review_id INTEGER NOT NULL,
    kind      TEXT    NOT NULL CHECK (kind IN ('start', 'reminder', 'close')),
    recipient TEXT    NOT NULL,
    state     TEXT    NOT NULL CHECK (state IN ('sending', 'sent', 'failed')),
    sent_ms   INTEGER NOT NULL,
    error     TEXT,
    PRIMARY KEY (review_id, kind, recipient)
);
