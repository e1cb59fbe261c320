-- keydesk on PostgreSQL: the application role can record and settle audit
-- entries but never rewrite or remove them. Run as the schema owner (the role
-- that ran `keydesk migrate`), after each migration, in keydesk's database:
--   psql "$OWNER_URL" -v ON_ERROR_STOP=1 -f deploy/postgres-grants.sql
-- It needs no CREATEROLE: the role itself is the DBA's one-time step
-- (deploy/app-role.sql, run by a superuser).
GRANT USAGE ON SCHEMA public TO keydesk_app;
-- keydesk checks at start that the schema is current; it never migrates as this role.
GRANT SELECT ON _sqlx_migrations TO keydesk_app;
-- The audit trail: read, append, and settle an open entry's outcome. No
-- DELETE, no TRUNCATE, no UPDATE of who/what/when; the triggers refuse even
-- those to the owner, and only the owner could disable them.
GRANT SELECT, INSERT ON audit TO keydesk_app;
GRANT UPDATE (outcome, key_id, upstream_status, error, finished_at) ON audit TO keydesk_app;
GRANT USAGE ON SEQUENCE audit_id_seq TO keydesk_app;
-- Shared state that is not a record: form tokens, sessions, jobs, the budget.
GRANT SELECT, INSERT, UPDATE, DELETE ON form_tokens, sessions TO keydesk_app;
GRANT SELECT, UPDATE ON jobs, rate_budget TO keydesk_app;
-- Claim links: created, claimed, revoked and expired by state changes.
GRANT SELECT, INSERT, UPDATE ON grants TO keydesk_app;
-- Expiry notices: passes and the one record per (key, threshold, channel).
GRANT SELECT, INSERT, UPDATE ON notice_runs, notices TO keydesk_app;
GRANT USAGE ON SEQUENCE notice_runs_id_seq TO keydesk_app;
-- Two-person approval requests: created, decided and executed by state changes.
GRANT SELECT, INSERT, UPDATE ON approvals TO keydesk_app;
-- Offboarding holds: placed by an offboarding, removed by a reinstatement.
GRANT SELECT, INSERT, UPDATE, DELETE ON holds TO keydesk_app;
-- Creates whose answer was lost, until reconciled from the key list.
GRANT SELECT, INSERT, UPDATE ON lost_creates TO keydesk_app;
-- Offboarding runs: their progress, shared by every replica.
GRANT SELECT, INSERT, UPDATE ON offboardings TO keydesk_app;
-- Leases of durable jobs: which replica runs one, and its heartbeat.
GRANT SELECT, INSERT, UPDATE ON job_leases TO keydesk_app;
-- Expired-key clean-ups: the run and the keys it still has to revoke.
GRANT SELECT, INSERT, UPDATE ON cleanups, cleanup_keys TO keydesk_app;
-- The keys that sign form tokens: generated once, rotated by
-- `keydesk rotate-form-key`, retired keys purged after their tokens expire.
GRANT SELECT, INSERT, UPDATE, DELETE ON form_keys TO keydesk_app;
-- Which release migrated the database and the oldest that may write to it:
-- read at start and by /readyz; only `keydesk migrate` (the owner) writes it.
GRANT SELECT ON keydesk_release TO keydesk_app;
-- Access reviews: started, decided (every decision kept), applied by a
-- durable job, and their reminders sent once across replicas.
GRANT SELECT, INSERT, UPDATE ON reviews, review_items, review_notices TO keydesk_app;
GRANT SELECT, INSERT ON review_decisions TO keydesk_app;
GRANT USAGE ON SEQUENCE reviews_id_seq, review_decisions_id_seq TO keydesk_app;
