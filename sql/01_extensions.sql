-- Extensions this database uses. pg_cron must be in shared_preload_libraries
-- and this database must be its cron.database_name; pg_tenancy should be
-- preloaded too (see the README's install section).
CREATE EXTENSION IF NOT EXISTS pg_tenancy CASCADE;
CREATE EXTENSION IF NOT EXISTS pg_cron;

-- Only PostgREST's roles run the pre-request hook; analysts pick a tenant.
GRANT EXECUTE ON FUNCTION tenancy.pre_request() TO anon, authenticated;
GRANT EXECUTE ON FUNCTION tenancy.set_tenant(text) TO analyst;

-- Role management checks roles.manage / roles.read itself; the API may call it.
GRANT EXECUTE ON FUNCTION
    tenancy.create_role(text, text, text[]),
    tenancy.delete_role(text),
    tenancy.grant_permission(text, text),
    tenancy.revoke_permission(text, text),
    tenancy.set_role_permission(text, text, boolean),
    tenancy.assign_role(uuid, text),
    tenancy.unassign_role(uuid, text),
    tenancy.set_user_role(uuid, text, boolean),
    tenancy.list_roles()
TO authenticated;

-- Idempotency: RPCs running as the API role claim and complete keys.
GRANT EXECUTE ON FUNCTION
    tenancy.idempotency_claim(text, jsonb, text),
    tenancy.idempotency_complete(jsonb, integer)
TO authenticated;
