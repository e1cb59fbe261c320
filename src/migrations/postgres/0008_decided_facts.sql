-- Expand only: the previous release keeps serving beside this (it neither
-- reads nor writes these columns; a link or request it makes has them NULL,
-- and this release then treats it as decided on the weakest facts).
--
-- What a rule was decided on when a claim link was made or a request was
-- asked for: the user's level, the ACLs the rules name, the reach. A key
-- made later under that decision must be no stronger.
ALTER TABLE grants ADD COLUMN IF NOT EXISTS decided_level TEXT;
ALTER TABLE grants ADD COLUMN IF NOT EXISTS decided_acls TEXT;
ALTER TABLE grants ADD COLUMN IF NOT EXISTS decided_anywhere BOOLEAN;
ALTER TABLE grants ADD COLUMN IF NOT EXISTS decided_allowlist TEXT;
ALTER TABLE approvals ADD COLUMN IF NOT EXISTS decided_level TEXT;
ALTER TABLE approvals ADD COLUMN IF NOT EXISTS decided_acls TEXT;
ALTER TABLE approvals ADD COLUMN IF NOT EXISTS decided_anywhere BOOLEAN;
ALTER TABLE approvals ADD COLUMN IF NOT EXISTS decided_allowlist TEXT;
