-- Audit entries can belong to a group (an offboarding, a clean-up): the
-- group's own entry id. A claim link's entries name it (grant_id), and a key
-- created by a claim names who granted it.
ALTER TABLE audit ADD COLUMN group_id INTEGER;
ALTER TABLE audit ADD COLUMN granted_by TEXT;
ALTER TABLE audit ADD COLUMN grant_id TEXT;
-- Two-person approval: who asked, who approved, and the request.
ALTER TABLE audit ADD COLUMN requested_by TEXT;
ALTER TABLE audit ADD COLUMN approved_by TEXT;
ALTER TABLE audit ADD COLUMN approval_id TEXT;
CREATE INDEX IF NOT EXISTS audit_group ON audit (group_id);

-- The settle-only rule now covers the new columns too.
DROP TRIGGER IF EXISTS audit_pending_settle_only;
CREATE TRIGGER audit_pending_settle_only
BEFORE UPDATE ON audit
WHEN OLD.outcome = 'pending' AND (
    NEW.outcome = 'pending'
    OR (OLD.key_id IS NOT NULL AND NEW.key_id IS NOT OLD.key_id)
    OR (NEW.id, NEW.at, NEW.actor, NEW.role, NEW.action, NEW.target_user_id,
        NEW.target_user_email, NEW.key_name, NEW.requested_expiry, NEW.reason,
        NEW.related_key_id, NEW.request_id, NEW.api_enabled, NEW.instance,
        NEW.started_ms, NEW.group_id, NEW.granted_by, NEW.grant_id,
        NEW.requested_by, NEW.approved_by, NEW.approval_id)
       IS NOT
       (OLD.id, OLD.at, OLD.actor, OLD.role, OLD.action, OLD.target_user_id,
        OLD.target_user_email, OLD.key_name, OLD.requested_expiry, OLD.reason,
        OLD.related_key_id, OLD.request_id, OLD.api_enabled, OLD.instance,
        OLD.started_ms, OLD.group_id, OLD.granted_by, OLD.grant_id,
        OLD.requested_by, OLD.approved_by, OLD.approval_id)
)
BEGIN
    SELECT RAISE(ABORT, 'only the outcome of an open audit entry can be set');
END;

-- Claim links: an operator's grant of a key that only its owner can create.
-- Never a secret: the key is created upstream when the owner claims it.
CREATE TABLE IF NOT EXISTS grants (
    id          TEXT    PRIMARY KEY,
    user_id     TEXT    NOT NULL,
    user_email  TEXT    NOT NULL,
    key_name    TEXT    NOT NULL,
    date_expire TEXT,
    reason      TEXT,
    created_by  TEXT    NOT NULL,
    created_ms  INTEGER NOT NULL,
    expires_ms  INTEGER NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('pending', 'claiming', 'claimed', 'expired', 'revoked', 'unknown')),
    claimed_by  TEXT,
    -- When the current claim went to Vultr: a claim left 'claiming' by a
    -- stopped process is settled from the key list once it is this old.
    claim_ms    INTEGER,
    key_id      TEXT,
    ended_by    TEXT,
    ended_ms    INTEGER,
    -- The owner claims; the operator who granted never does (unless they are the owner).
    CHECK (state <> 'claimed' OR lower(claimed_by) = lower(user_email))
);
CREATE INDEX IF NOT EXISTS grants_user ON grants (user_id);
CREATE INDEX IF NOT EXISTS grants_state ON grants (state);
