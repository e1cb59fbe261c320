-- Expand-only: new tables and new nullable columns, so the previous
-- release keeps serving beside this one (it never reads them).
--
-- Durable jobs (an offboarding, a notice pass) are run under a lease: the
-- replica holding it renews its heartbeat; when the heartbeat stops (a
-- replica killed), the lease expires and another replica takes the job over.
-- Taken, renewed and released by conditional updates only.
CREATE TABLE IF NOT EXISTS job_leases (
    job          TEXT    PRIMARY KEY,
    holder       TEXT    NOT NULL,
    acquired_ms  INTEGER NOT NULL,
    heartbeat_ms INTEGER NOT NULL,
    expires_ms   INTEGER NOT NULL
);

-- What an offboarding needs to be resumed by another replica: the steps
-- already done (so no PATCH or withdrawal is repeated), the reason, the
-- email and the keys the confirmation listed.
ALTER TABLE offboardings ADD COLUMN steps_done TEXT;
ALTER TABLE offboardings ADD COLUMN reason TEXT;
ALTER TABLE offboardings ADD COLUMN user_email TEXT;
ALTER TABLE offboardings ADD COLUMN listed TEXT;

-- Clearing the report's expired keys as a durable job: the run and every
-- key it is to revoke, written before the first DELETE; each key's outcome
-- recorded as it ends, so a run taken over by another replica deals only
-- with the keys left (and checks those at Vultr again first).
CREATE TABLE IF NOT EXISTS cleanups (
    group_id   INTEGER PRIMARY KEY,
    started_by TEXT    NOT NULL,
    reason     TEXT,
    state      TEXT    NOT NULL CHECK (state IN ('running', 'done')),
    started_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS cleanup_keys (
    group_id INTEGER NOT NULL,
    user_id  TEXT    NOT NULL,
    key_id   TEXT    NOT NULL,
    -- NULL until dealt with; then done, gone, skipped, failed or unknown.
    outcome  TEXT,
    PRIMARY KEY (group_id, user_id, key_id)
);
