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
