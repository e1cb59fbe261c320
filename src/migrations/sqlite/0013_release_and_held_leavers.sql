-- Expand (the previous release keeps serving beside it): a new table, a
-- trigger that only refuses what every release already refuses, rows of
-- kinds every release reads.
--
-- 1. Which release migrated this database, and the oldest release that may
-- still write to it. keydesk writes its own version here after migrating and
-- refuses to serve a database whose oldest writer is newer than itself.
CREATE TABLE IF NOT EXISTS keydesk_release (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    migrated_by   TEXT    NOT NULL,
    oldest_writer TEXT    NOT NULL,
    migrated_ms   INTEGER NOT NULL
);
INSERT OR IGNORE INTO keydesk_release (id, migrated_by, oldest_writer, migrated_ms)
VALUES (1, '0.1.0', '0.1.0', CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));

-- 2. Holds on one spelling (a release before 0.2.0 kept ids as Vultr wrote
-- them): lower-case, one per user.
DELETE FROM holds WHERE user_id <> lower(user_id)
  AND EXISTS (SELECT 1 FROM holds h2 WHERE h2.user_id = lower(holds.user_id));
UPDATE holds SET user_id = lower(user_id) WHERE user_id <> lower(user_id);

-- 3. Leavers from before holds existed: a user whose latest offboarding is
-- not followed by a successful switch of API access back on (nor a
-- reinstatement) is held, as an offboarding does today. Their open claim
-- links and pending or approved requests (other than to reinstate them) are
-- withdrawn. Each is a system audit row.
CREATE TEMP TABLE held_leavers AS
SELECT lower(o.target_user_id) AS user_id,
       o.target_user_email     AS user_email,
       o.actor                 AS offboarded_by,
       o.at                    AS offboarded_at,
       o.id                    AS audit_id,
       COALESCE(o.group_id, o.id) AS group_id,
       COALESCE(o.started_ms, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)) AS placed_ms
FROM audit o
WHERE o.action = 'user.offboard'
  AND o.target_user_id IS NOT NULL
  AND o.id = (SELECT max(x.id) FROM audit x
              WHERE x.action = 'user.offboard'
                AND lower(x.target_user_id) = lower(o.target_user_id))
  AND NOT EXISTS (SELECT 1 FROM audit a
                  WHERE lower(a.target_user_id) = lower(o.target_user_id)
                    AND a.id > o.id AND a.outcome = 'ok'
                    AND ((a.action = 'user.api_access' AND a.api_enabled = 1)
                         OR a.action = 'user.reinstate'))
  AND NOT EXISTS (SELECT 1 FROM holds h WHERE lower(h.user_id) = lower(o.target_user_id));

INSERT INTO audit (at, actor, role, action, target_user_id, target_user_email, reason,
                   outcome, group_id, started_ms, finished_at)
SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), 'keydesk', 'system', 'user.offboard',
       l.user_id, l.user_email,
       'hold placed by the upgrade: offboarded by ' || l.offboarded_by || ' at ' || l.offboarded_at
         || ' (audit #' || l.audit_id || '), before keydesk kept holds',
       'ok', l.group_id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER),
       strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
FROM held_leavers l ORDER BY l.audit_id;

INSERT INTO holds (user_id, user_email, placed_by, placed_ms, reason, group_id)
SELECT user_id, user_email, offboarded_by, placed_ms,
       'offboarded before holds existed (held by the upgrade)', group_id
FROM held_leavers
WHERE true
ON CONFLICT (user_id) DO NOTHING;

INSERT INTO audit (at, actor, role, action, target_user_id, target_user_email, key_name, reason,
                   outcome, grant_id, granted_by, started_ms, finished_at)
SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), 'keydesk', 'system', 'grant.revoke',
       g.user_id, g.user_email, g.key_name,
       'withdrawn by the upgrade: this user is held (offboarded before holds existed)',
       'ok', g.id, g.created_by, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER),
       strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
FROM grants g
WHERE g.state IN ('pending', 'unknown') AND lower(g.user_id) IN (SELECT user_id FROM held_leavers)
ORDER BY g.created_ms;

UPDATE grants
SET state = 'revoked', ended_by = 'keydesk',
    ended_ms = CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
WHERE state IN ('pending', 'unknown') AND lower(user_id) IN (SELECT user_id FROM held_leavers);

INSERT INTO audit (at, actor, role, action, target_user_id, target_user_email, key_name, reason,
                   outcome, approval_id, requested_by, started_ms, finished_at)
SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), 'keydesk', 'system', 'approval.withdraw',
       r.user_id, r.user_email, r.key_name,
       'withdrawn by the upgrade: this user is held (offboarded before holds existed)',
       'ok', r.id, r.requested_by, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER),
       strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
FROM approvals r
WHERE r.state IN ('pending', 'approved') AND r.action <> 'user.reinstate'
  AND lower(r.user_id) IN (SELECT user_id FROM held_leavers)
ORDER BY r.requested_ms;

UPDATE approvals SET state = 'withdrawn'
WHERE state IN ('pending', 'approved') AND action <> 'user.reinstate'
  AND lower(user_id) IN (SELECT user_id FROM held_leavers);

DROP TABLE held_leavers;

-- 4. The hold, enforced by the database too: an audit intent (the row every
-- keydesk writes before it calls Vultr) that would give a held user a key or
-- API access is refused, whichever replica of whichever release writes it.
-- The same actions as `Intent::gives_access`. keydesk's own rows (role
-- 'system': a lost create found later, an interrupted execution settled)
-- record what already happened and call nobody: never refused, the audit
-- loses nothing.
CREATE TRIGGER IF NOT EXISTS audit_refuses_held
BEFORE INSERT ON audit
WHEN NEW.outcome = 'pending'
 AND NEW.target_user_id IS NOT NULL
 AND NEW.role <> 'system'
 AND (NEW.action IN ('key.create', 'key.rotate', 'grant.create', 'grant.claim',
                     'user.allowlist.add', 'user.allowlist.remove')
      OR (NEW.action = 'user.api_access' AND NEW.api_enabled = 1)
      OR (NEW.action = 'approval.request' AND (NEW.key_name IS NOT NULL OR NEW.api_enabled = 1)))
 AND EXISTS (SELECT 1 FROM holds WHERE lower(holds.user_id) = lower(NEW.target_user_id))
BEGIN
    SELECT RAISE(ABORT, 'keydesk hold: this user was offboarded; no key or API access until they are reinstated');
END;

-- 5. The append-only guard covers every column added since it was written
-- (level, acls, allowlist: what a key could do when it was written).
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
        NEW.requested_by, NEW.approved_by, NEW.approval_id,
        NEW.level, NEW.acls, NEW.allowlist)
       IS NOT
       (OLD.id, OLD.at, OLD.actor, OLD.role, OLD.action, OLD.target_user_id,
        OLD.target_user_email, OLD.key_name, OLD.requested_expiry, OLD.reason,
        OLD.related_key_id, OLD.request_id, OLD.api_enabled, OLD.instance,
        OLD.started_ms, OLD.group_id, OLD.granted_by, OLD.grant_id,
        OLD.requested_by, OLD.approved_by, OLD.approval_id,
        OLD.level, OLD.acls, OLD.allowlist)
)
BEGIN
    SELECT RAISE(ABORT, 'only the outcome of an open audit entry can be set');
END;
