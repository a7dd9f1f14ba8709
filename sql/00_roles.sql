-- Cluster roles used by the reference deployment. Idempotent.
--
--   authenticator  LOGIN, no privileges of its own: PostgREST connects as it
--                  and switches to anon or authenticated per request.
--   anon           requests without a token: nothing but /rpc/health.
--   authenticated  requests with a valid token: the api schema.
--   ledger_owner   owns the ledger tables; FORCE ROW LEVEL SECURITY keeps
--                  even it inside the current tenant.
--   analyst        psql users who pick a tenant with tenancy.set_tenant().
--   tenancy_jobs   the role pg_cron runs tenant work as (for_each_tenant sets
--                  each tenant in turn). LOGIN only because pg_cron's workers
--                  log in as it; give it no password, so nobody else can.
--   tenancy_maintenance
--                  the role pg_cron runs audit log maintenance as: the only
--                  role that may run tenancy.audit_maintain(), which creates
--                  and drops audit partitions. LOGIN for pg_cron, no password.
--
-- None of them has BYPASSRLS. In production give authenticator a password
-- (ALTER ROLE authenticator PASSWORD '...') and use scram-sha-256 in pg_hba.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT * FROM (VALUES
        ('authenticator', 'LOGIN NOINHERIT'),
        ('anon',          'NOLOGIN'),
        ('authenticated', 'NOLOGIN'),
        ('ledger_owner',  'NOLOGIN'),
        ('analyst',       'NOLOGIN'),
        ('tenancy_jobs',  'LOGIN'),
        ('tenancy_maintenance', 'LOGIN')
    ) AS v(name, opts) LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r.name) THEN
            EXECUTE format('CREATE ROLE %I %s', r.name, r.opts);
        END IF;
        EXECUTE format('ALTER ROLE %I NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE', r.name);
    END LOOP;
END
$$;

GRANT anon, authenticated TO authenticator;
