-- State that used to live in one process's memory, so restarts lose nothing.

-- Which process wrote an intent, and when (database clock, ms): an open
-- intent is marked unknown only once no request could still settle it.
ALTER TABLE audit ADD COLUMN instance TEXT;
ALTER TABLE audit ADD COLUMN started_ms INTEGER;

-- One-time form tokens: only a hash of the token is stored.
CREATE TABLE IF NOT EXISTS form_tokens (
    token_hash TEXT    PRIMARY KEY,
    actor      TEXT    NOT NULL,
    scope      TEXT    NOT NULL,
    session_binding TEXT,
    state      TEXT    NOT NULL CHECK (state IN ('fresh', 'inflight', 'done')),
    result_id  TEXT,
    expires_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS form_tokens_expiry ON form_tokens (expires_ms);

-- Browser sessions (tower-sessions records): an identity binding and a
-- one-off notice, never a secret.
CREATE TABLE IF NOT EXISTS sessions (
    id         TEXT    PRIMARY KEY,
    data       TEXT    NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_expiry ON sessions (expires_ms);

-- Background jobs, one row each: who holds the lease, progress, last result.
CREATE TABLE IF NOT EXISTS jobs (
    name           TEXT    PRIMARY KEY,
    owner          TEXT,
    lease_until_ms INTEGER NOT NULL DEFAULT 0,
    started_by     TEXT,
    started_ms     INTEGER,
    done           INTEGER NOT NULL DEFAULT 0,
    total          INTEGER NOT NULL DEFAULT 0,
    result         TEXT,
    finished_ms    INTEGER,
    error          TEXT
);
INSERT OR IGNORE INTO jobs (name) VALUES ('report.scan');

-- The upstream rate budget: GCRA's theoretical arrival time, per budget.
CREATE TABLE IF NOT EXISTS rate_budget (
    name   TEXT    PRIMARY KEY,
    tat_ms INTEGER NOT NULL
);
INSERT OR IGNORE INTO rate_budget (name, tat_ms) VALUES ('vultr', 0);
