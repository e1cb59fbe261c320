-- Expand-only: one new table and new nullable columns, so the previous
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
