-- Extensions this database uses. pg_cron must be in shared_preload_libraries
-- and this database must be its cron.database_name; pg_tenancy should be
-- preloaded too (sql/postgresql.conf, and the README's install section).
-- Check first, so a misconfigured server gets one clear message and this
-- file (one transaction) installs nothing.
DO $$
BEGIN
    IF NOT 'pg_cron' = ANY (string_to_array(replace(current_setting('shared_preload_libraries'), ' ', ''), ',')) THEN
        RAISE EXCEPTION 'pg_cron is not in shared_preload_libraries'
            USING HINT = 'Add the settings of sql/postgresql.conf to postgresql.conf and restart Postgres.';
    END IF;
    IF current_setting('cron.database_name', true) IS DISTINCT FROM current_database() THEN
        RAISE EXCEPTION 'pg_cron runs jobs in database "%", not in "%"',
            current_setting('cron.database_name', true), current_database()
            USING HINT = format('Set cron.database_name = %L in postgresql.conf and restart, or load sql/ into that database.', current_database());
    END IF;
END
$$;

CREATE EXTENSION IF NOT EXISTS pg_tenancy CASCADE;
CREATE EXTENSION IF NOT EXISTS pg_cron;

-- Only PostgREST's roles run the pre-request hook; analysts pick a tenant.
-- The platform's analysts (members of analyst) may enter every tenant, on
-- purpose: tenancy.check() lists each login that may. A customer's login
-- gets tenancy.grant_sql_access() to its own tenants instead (README).
GRANT EXECUTE ON FUNCTION tenancy.pre_request(), tenancy._pre_request() TO anon, authenticated;
GRANT EXECUTE ON FUNCTION tenancy.set_tenant(text) TO analyst;
SELECT tenancy.grant_all_tenants('analyst');

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

-- Scheduled tenant work: pg_cron runs for_each_tenant as tenancy_jobs, which
-- enters every tenant (tenancy.check() lists it, as it should).
GRANT EXECUTE ON PROCEDURE tenancy.for_each_tenant(regprocedure, text[]) TO tenancy_jobs;
SELECT tenancy.grant_all_tenants('tenancy_jobs');
GRANT EXECUTE ON FUNCTION tenancy._job_context(uuid) TO tenancy_jobs;
GRANT SELECT ON tenancy.tenants TO tenancy_jobs;

-- Reconciliation rules: set_reconcile_rules checks reconciliation.manage itself.
GRANT EXECUTE ON FUNCTION tenancy.set_reconcile_rules(jsonb) TO authenticated, analyst;

-- Idempotency: RPCs running as the API role claim and complete keys.
GRANT EXECUTE ON FUNCTION
    tenancy.idempotency_claim(text, jsonb, text),
    tenancy.idempotency_complete(jsonb, integer)
TO authenticated;

-- Audit trail: readers see their tenant's entries with audit.read (row level
-- security on tenancy.audit_log); nobody but tenancy_maintenance, through
-- tenancy.audit_maintain(), removes any. Partitions for the coming months now.
GRANT SELECT ON tenancy.audit_log TO authenticated, analyst;
GRANT EXECUTE ON FUNCTION tenancy.audit_maintain() TO tenancy_maintenance;
SELECT count(*) AS audit_partitions_changed FROM tenancy.audit_maintain();
