-- The brake's new state gets its own column (it used to be spelled into key_name).
ALTER TABLE audit ADD COLUMN api_enabled INTEGER;

-- An open intent may only be settled: its outcome columns set once, and a
-- key id filled in when it had none. Who, what, which target and when never
-- change, and an entry never goes back to pending.
CREATE TRIGGER IF NOT EXISTS audit_pending_settle_only
BEFORE UPDATE ON audit
WHEN OLD.outcome = 'pending' AND (
    NEW.outcome = 'pending'
    OR (OLD.key_id IS NOT NULL AND NEW.key_id IS NOT OLD.key_id)
    OR (NEW.id, NEW.at, NEW.actor, NEW.role, NEW.action, NEW.target_user_id,
        NEW.target_user_email, NEW.key_name, NEW.requested_expiry, NEW.reason,
        NEW.related_key_id, NEW.request_id, NEW.api_enabled)
       IS NOT
       (OLD.id, OLD.at, OLD.actor, OLD.role, OLD.action, OLD.target_user_id,
        OLD.target_user_email, OLD.key_name, OLD.requested_expiry, OLD.reason,
        OLD.related_key_id, OLD.request_id, OLD.api_enabled)
)
BEGIN
    SELECT RAISE(ABORT, 'only the outcome of an open audit entry can be set');
END;
