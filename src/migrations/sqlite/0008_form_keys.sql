-- The keys that sign form tokens (stateless at issue, claimed once at submit).
-- One row has slot 'current' and signs; retired rows (slot NULL) still verify
-- until the tokens they signed have expired. Unused when KEYDESK_SECRET_KEY
-- is set.
CREATE TABLE IF NOT EXISTS form_keys (
    kid        TEXT    PRIMARY KEY,
    secret     TEXT    NOT NULL,
    slot       TEXT    UNIQUE CHECK (slot IS NULL OR slot = 'current'),
    created_ms INTEGER NOT NULL,
    retired_ms INTEGER
);
