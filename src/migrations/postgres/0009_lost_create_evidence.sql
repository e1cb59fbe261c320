-- Expand-only: two new nullable columns on each table, nothing dropped or
-- renamed, so the previous release keeps serving beside this one (it reads
-- and writes the columns it knows; a row it writes has no snapshot and is
-- never settled as made from a name alone).
--
-- keys_before: the ids of the user's keys as keydesk read them just before
-- the create (a JSON list): a key already there is never the create's.
-- candidates: set when more than one key may be the create's (a JSON list
-- of id, name and last characters): the entry stays open, "ambiguous".
ALTER TABLE lost_creates ADD COLUMN IF NOT EXISTS keys_before TEXT;
ALTER TABLE lost_creates ADD COLUMN IF NOT EXISTS candidates TEXT;
ALTER TABLE grants ADD COLUMN IF NOT EXISTS keys_before TEXT;
ALTER TABLE grants ADD COLUMN IF NOT EXISTS candidates TEXT;
