-- Expiry notices: each pass over the account, and each notice a pass sent.

CREATE TABLE IF NOT EXISTS notice_runs (
    id          BIGSERIAL PRIMARY KEY,
    started_ms  BIGINT    NOT NULL,
    finished_ms BIGINT,
    -- What started it: the schedule, the command line or a person.
    trigger     TEXT    NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('running', 'ok', 'failed')),
    users       BIGINT    NOT NULL DEFAULT 0,
    keys_due    BIGINT    NOT NULL DEFAULT 0,
    sent        BIGINT    NOT NULL DEFAULT 0,
    failed      BIGINT    NOT NULL DEFAULT 0,
    error       TEXT
);

-- One row per (key, threshold, channel), written before the send: a notice
-- goes out once. threshold_days 0 is the "expired" notice. A failed send is
-- tried again by the next pass; one left 'sending' by a stopped process is
-- never resent (it may have gone out) and shows as such.
CREATE TABLE IF NOT EXISTS notices (
    key_id         TEXT    NOT NULL,
    threshold_days BIGINT    NOT NULL,
    channel        TEXT    NOT NULL,
    user_id        TEXT    NOT NULL,
    user_email     TEXT,
    key_name       TEXT,
    date_expire    TEXT    NOT NULL,
    days_left      BIGINT    NOT NULL,
    state          TEXT    NOT NULL CHECK (state IN ('sending', 'sent', 'failed')),
    attempts       BIGINT    NOT NULL DEFAULT 1,
    error          TEXT,
    run_id         BIGINT    NOT NULL,
    created_ms     BIGINT    NOT NULL,
    updated_ms     BIGINT    NOT NULL,
    PRIMARY KEY (key_id, threshold_days, channel)
);
CREATE INDEX IF NOT EXISTS notices_user ON notices (user_id);
CREATE INDEX IF NOT EXISTS notices_updated ON notices (updated_ms);

INSERT INTO jobs (name) VALUES ('notices.run') ON CONFLICT (name) DO NOTHING;
