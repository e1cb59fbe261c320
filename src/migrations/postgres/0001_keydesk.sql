-- keydesk on PostgreSQL: the audit trail (append-only, enforced by triggers),
-- form tokens, sessions, background jobs and the cluster's upstream budget.

CREATE TABLE IF NOT EXISTS audit (
    id                BIGSERIAL PRIMARY KEY,
    at                TEXT    NOT NULL,
    actor             TEXT    NOT NULL,
    role              TEXT    NOT NULL,
    action            TEXT    NOT NULL,
    target_user_id    TEXT,
    target_user_email TEXT,
    key_id            TEXT,
    key_name          TEXT,
    requested_expiry  TEXT,
    reason            TEXT,
    related_key_id    TEXT,
    outcome           TEXT    NOT NULL,
    upstream_status   BIGINT,
    error             TEXT,
    request_id        TEXT,
    finished_at       TEXT,
    api_enabled       BOOLEAN,
    instance          TEXT,
    started_ms        BIGINT
);
CREATE INDEX IF NOT EXISTS audit_actor ON audit (actor);
CREATE INDEX IF NOT EXISTS audit_target ON audit (target_user_id);
CREATE INDEX IF NOT EXISTS audit_key ON audit (key_id);
CREATE INDEX IF NOT EXISTS audit_pending ON audit (outcome) WHERE outcome = 'pending';

-- Append-only: no DELETE, no TRUNCATE; a settled row never changes; an open
-- row may only have its outcome columns set once (and a missing key id filled).
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
              NEW.related_key_id, NEW.request_id, NEW.api_enabled, NEW.instance, NEW.started_ms)
          IS DISTINCT FROM
          ROW(OLD.id, OLD.at, OLD.actor, OLD.role, OLD.action, OLD.target_user_id,
              OLD.target_user_email, OLD.key_name, OLD.requested_expiry, OLD.reason,
              OLD.related_key_id, OLD.request_id, OLD.api_enabled, OLD.instance, OLD.started_ms)
    THEN
        RAISE EXCEPTION 'only the outcome of an open audit entry can be set';
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_guard();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION audit_guard();
CREATE TRIGGER audit_settle_only BEFORE UPDATE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_guard();

CREATE TABLE IF NOT EXISTS form_tokens (
    token_hash TEXT   PRIMARY KEY,
    actor      TEXT   NOT NULL,
    scope      TEXT   NOT NULL,
    session_binding TEXT,
    state      TEXT   NOT NULL CHECK (state IN ('fresh', 'inflight', 'done')),
    result_id  TEXT,
    expires_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS form_tokens_expiry ON form_tokens (expires_ms);

CREATE TABLE IF NOT EXISTS sessions (
    id         TEXT   PRIMARY KEY,
    data       TEXT   NOT NULL,
    expires_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_expiry ON sessions (expires_ms);

CREATE TABLE IF NOT EXISTS jobs (
    name           TEXT   PRIMARY KEY,
    owner          TEXT,
    lease_until_ms BIGINT NOT NULL DEFAULT 0,
    started_by     TEXT,
    started_ms     BIGINT,
    done           BIGINT NOT NULL DEFAULT 0,
    total          BIGINT NOT NULL DEFAULT 0,
    result         TEXT,
    finished_ms    BIGINT,
    error          TEXT
);
INSERT INTO jobs (name) VALUES ('report.scan') ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS rate_budget (
    name   TEXT   PRIMARY KEY,
    tat_ms BIGINT NOT NULL
);
INSERT INTO rate_budget (name, tat_ms) VALUES ('vultr', 0) ON CONFLICT DO NOTHING;
