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
    migrated_ms   BIGINT  NOT NULL
);
INSERT INTO keydesk_release (id, migrated_by, oldest_writer, migrated_ms)
VALUES (1, '0.1.0', '0.1.0', (extract(epoch from clock_timestamp()) * 1000)::BIGINT)
ON CONFLICT (id) DO NOTHING;

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
CREATE TEMP TABLE held_leavers ON COMMIT DROP AS
SELECT lower(o.target_user_id) AS user_id,
       o.target_user_email     AS user_email,
       o.actor                 AS offboarded_by,
       o.at                    AS offboarded_at,
       o.id                    AS audit_id,
       COALESCE(o.group_id, o.id) AS group_id,
       COALESCE(o.started_ms, (extract(epoch from clock_timestamp()) * 1000)::BIGINT) AS placed_ms
FROM audit o
WHERE o.action = 'user.offboard'
  AND o.target_user_id IS NOT NULL
  AND o.id = (SELECT max(x.id) FROM audit x
              WHERE x.action = 'user.offboard'
                AND lower(x.target_user_id) = lower(o.target_user_id))
  AND NOT EXISTS (SELECT 1 FROM audit a
                  WHERE lower(a.target_user_id) = lower(o.target_user_id)
                    AND a.id > o.id AND a.outcome = 'ok'
                    AND ((a.action = 'user.api_access' AND a.api_enabled)
                         OR a.action = 'user.reinstate'))
  AND NOT EXISTS (SELECT 1 FROM holds h WHERE lower(h.user_id) = lower(o.target_user_id));

INSERT INTO audit (at, actor, role, action, target_user_id, target_user_email, reason,
                   outcome, group_id, started_ms, finished_at)
SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
       'keydesk', 'system', 'user.offboard', l.user_id, l.user_email,
       'hold placed by the upgrade: offboarded by ' || l.offboarded_by || ' at ' || l.offboarded_at
         || ' (audit #' || l.audit_id || '), before keydesk kept holds',
       'ok', l.group_id, (extract(epoch from clock_timestamp()) * 1000)::BIGINT,
       to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
FROM held_leavers l ORDER BY l.audit_id;

INSERT INTO holds (user_id, user_email, placed_by, placed_ms, reason, group_id)
SELECT user_id, user_email, offboarded_by, placed_ms,
       'offboarded before holds existed (held by the upgrade)', group_id
FROM held_leavers
ON CONFLICT (user_id) DO NOTHING;

INSERT INTO audit (at, actor, role, action, target_user_id, target_user_email, key_name, reason,
                   outcome, grant_id, granted_by, started_ms, finished_at)
SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
       'keydesk', 'system', 'grant.revoke', g.user_id, g.user_email, g.key_name,
       'withdrawn by the upgrade: this user is held (offboarded before holds existed)',
       'ok', g.id, g.created_by, (extract(epoch from clock_timestamp()) * 1000)::BIGINT,
       to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
FROM grants g
WHERE g.state IN ('pending', 'unknown') AND lower(g.user_id) IN (SELECT user_id FROM held_leavers)
ORDER BY g.created_ms;

UPDATE grants
SET state = 'revoked', ended_by = 'keydesk',
    ended_ms = (extract(epoch from clock_timestamp()) * 1000)::BIGINT
WHERE state IN ('pending', 'unknown') AND lower(user_id) IN (SELECT user_id FROM held_leavers);

INSERT INTO audit (at, actor, role, action, target_user_id, target_user_email, key_name, reason,
                   outcome, approval_id, requested_by, started_ms, finished_at)
SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
       'keydesk', 'system', 'approval.withdraw', r.user_id, r.user_email, r.key_name,
       'withdrawn by the upgrade: this user is held (offboarded before holds existed)',
       'ok', r.id, r.requested_by, (extract(epoch from clock_timestamp()) * 1000)::BIGINT,
       to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
FROM approvals r
WHERE r.state IN ('pending', 'approved') AND r.action <> 'user.reinstate'
  AND lower(r.user_id) IN (SELECT user_id FROM held_leavers)
ORDER BY r.requested_ms;

UPDATE approvals SET state = 'withdrawn'
WHERE state IN ('pending', 'approved') AND action <> 'user.reinstate'
  AND lower(user_id) IN (SELECT user_id FROM held_leavers);

-- 4. The hold, enforced by the database too: an audit intent (the row every
-- keydesk writes before it calls Vultr) that would give a held user a key or
-- API access is refused, whichever replica of whichever release writes it.
-- The same actions as `Intent::gives_access`. keydesk's own rows (role
-- 'system': a lost create found later, an interrupted execution settled)
-- record what already happened and call nobody: never refused, the audit
-- loses nothing.
CREATE OR REPLACE FUNCTION audit_refuses_held() RETURNS trigger AS $$
BEGIN
    IF NEW.outcome = 'pending'
       AND NEW.target_user_id IS NOT NULL
       AND NEW.role <> 'system'
       AND (NEW.action IN ('key.create', 'key.rotate', 'grant.create', 'grant.claim',
                           'user.allowlist.add', 'user.allowlist.remove')
            OR (NEW.action = 'user.api_access' AND NEW.api_enabled IS TRUE)
            OR (NEW.action = 'approval.request'
                AND (NEW.key_name IS NOT NULL OR NEW.api_enabled IS TRUE)))
       AND EXISTS (SELECT 1 FROM public.holds h WHERE lower(h.user_id) = lower(NEW.target_user_id))
    THEN
        RAISE EXCEPTION 'keydesk hold: this user was offboarded; no key or API access until they are reinstated'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql SET search_path = public, pg_temp;
DROP TRIGGER IF EXISTS audit_refuses_held ON audit;
CREATE TRIGGER audit_refuses_held BEFORE INSERT ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_refuses_held();

-- 5. The append-only guard covers every column added since it was written
-- (level, acls, allowlist: what a key could do when it was written).
CREATE OR REPLACE FUNCTION audit_guard() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' OR TG_OP = 'TRUNCATE' THEN
        RAISE EXCEPTION 'the audit trail is append-only';
    END IF;
    IF OLD.outcome <> 'pending' THEN
        RAISE EXCEPTION 'a settled audit entry cannot change';
    END IF;
    IF NEW.outcome = 'pending'
       OR (OLD.key_id IS NOT NULL AND NEW.key_id IS DISTINCT FROM OLD.key_id)
       OR ROW(NEW.id, NEW.at, NEW.actor, NEW.role, NEW.action, NEW.target_user_id,
              NEW.target_user_email, NEW.key_name, NEW.requested_expiry, NEW.reason,
              NEW.related_key_id, NEW.request_id, NEW.api_enabled, NEW.instance, NEW.started_ms,
              NEW.group_id, NEW.granted_by, NEW.grant_id,
              NEW.requested_by, NEW.approved_by, NEW.approval_id,
              NEW.level, NEW.acls, NEW.allowlist)
          IS DISTINCT FROM
          ROW(OLD.id, OLD.at, OLD.actor, OLD.role, OLD.action, OLD.target_user_id,
              OLD.target_user_email, OLD.key_name, OLD.requested_expiry, OLD.reason,
              OLD.related_key_id, OLD.request_id, OLD.api_enabled, OLD.instance, OLD.started_ms,
              OLD.group_id, OLD.granted_by, OLD.grant_id,
              OLD.requested_by, OLD.approved_by, OLD.approval_id,
              OLD.level, OLD.acls, OLD.allowlist)
    THEN
        RAISE EXCEPTION 'only the outcome of an open audit entry can be set';
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;
