-- Extensions this database uses. pg_cron must be in shared_preload_libraries
-- and this database must be its cron.database_name; pg_tenancy should be
-- preloaded too (see the README's install section).
CREATE EXTENSION IF NOT EXISTS pg_tenancy CASCADE;
CREATE EXTENSION IF NOT EXISTS pg_cron;

-- Only PostgREST's roles run the pre-request hook; analysts pick a tenant.
GRANT EXECUTE ON FUNCTION tenancy.pre_request() TO anon, authenticated;
GRANT EXECUTE ON FUNCTION tenancy.set_tenant(text) TO analyst;
