-- What a key could do, recorded with every key and allowlist write: the
-- user's level, ACLs and API allowlist as Vultr reported them at the time.
ALTER TABLE audit ADD COLUMN IF NOT EXISTS level TEXT;
ALTER TABLE audit ADD COLUMN IF NOT EXISTS acls TEXT;
ALTER TABLE audit ADD COLUMN IF NOT EXISTS allowlist TEXT;
CREATE INDEX IF NOT EXISTS audit_level ON audit (level);

-- Adding an allowlist entry can wait for a second person.
ALTER TABLE approvals ADD COLUMN IF NOT EXISTS subnet TEXT;
ALTER TABLE approvals DROP CONSTRAINT IF EXISTS approvals_action_check;
ALTER TABLE approvals ADD CONSTRAINT approvals_action_check
    CHECK (action IN ('key.create', 'key.rotate', 'grant.create', 'user.api_access', 'user.reinstate', 'user.allowlist.add'));
