-- The application role keydesk runs as, created once and given its password;
-- run as the schema owner (a role that may create roles), before
-- deploy/postgres-grants.sql:
--   psql "$OWNER_URL" -v ON_ERROR_STOP=1 -v app_password="$APP_PASSWORD" \
--     -f deploy/app-role.sql -f deploy/postgres-grants.sql
SELECT 'CREATE ROLE keydesk_app LOGIN'
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'keydesk_app')\gexec
ALTER ROLE keydesk_app PASSWORD :'app_password';
