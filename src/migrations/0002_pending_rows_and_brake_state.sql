-- The brake's new state gets its own column (it used to be spelled into key_name).
ALTER TABLE audit ADD COLUMN api_enabled INTEGER;

-- An open intent may only be settled: its outcome columns set once, and a
-- key id filled in when it had none. Who, what, which target and when never
-- change, and an entry never goes back to pending.
CREATE TRIGGER IF NOT EXISTS audit_pending_settle_only
BEFORE UPDATE ON audit
WHEN OLD.outcome = 'pending' AND (
       NEW.outcome = 'pending'
    OR NEW.id IS NOT OLD.id
    OR NEW.at IS NOT OLD.at
    OR NEW.actor IS NOT OLD.actor
    OR NEW.role IS NOT OLD.role
    OR NEW.action IS NOT OLD.action
    OR NEW.target_user_id IS NOT OLD.target_user_id
    OR NEW.target_user_email IS NOT OLD.target_user_email
    OR (OLD.key_id IS NOT NULL AND NEW.key_id IS NOT OLD.key_id)
    OR NEW.key_name IS NOT OLD.key_name
    OR NEW.requested_expiry IS NOT OLD.requested_expiry
    OR NEW.reason IS NOT OLD.reason
    OR NEW.related_key_id IS NOT OLD.related_key_id
    OR NEW.request_id IS NOT OLD.request_id
    OR NEW.api_enabled IS NOT OLD.api_enabled
)
BEGIN
    SELECT RAISE(ABORT, 'only the outcome of an open audit entry can be set');
END;
