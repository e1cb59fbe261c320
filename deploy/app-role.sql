-- The application role keydesk runs as: the DBA's one-time step, run by a
-- superuser (or any role with CREATEROLE) when keydesk is first deployed, or
-- again only to change the role's password. Upgrades never run it: they run
-- `keydesk migrate` as the schema owner, then deploy/postgres-grants.sql as
-- the owner, and neither needs CREATEROLE.
--   psql "$ADMIN_URL" -v ON_ERROR_STOP=1 -v app_password="$APP_PASSWORD" \
--     -f deploy/app-role.sql
SELECT 'CREATE ROLE keydesk_app LOGIN'
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'keydesk_app')\gexec
ALTER ROLE keydesk_app PASSWORD :'app_password';
