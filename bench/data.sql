-- Benchmark data: 1,000 tenants x 1,000 invoices in ledger.invoices (tenant-
-- scoped by tenancy.enable), and an identical copy in bench_plain.invoices with
-- no row level security: the hand-written baseline.
-- Tenant n has the id 00000000-0000-4000-8000-<n, 12 digits> so that a pgbench
-- script can name it without a lookup, on both sides alike.
\ir tenants.sql

CREATE SCHEMA bench_plain;
CREATE TABLE bench_plain.invoices (LIKE ledger.invoices INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES);
INSERT INTO bench_plain.invoices SELECT * FROM ledger.invoices;
VACUUM ANALYZE ledger.invoices;
VACUUM ANALYZE bench_plain.invoices;

-- The benchmark's database user: an ordinary login role, like PostgREST's.
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bench_user') THEN
        CREATE ROLE bench_user LOGIN;
    END IF;
END $$;
GRANT analyst TO bench_user;
GRANT USAGE ON SCHEMA bench_plain TO bench_user, authenticated;
GRANT SELECT ON bench_plain.invoices TO bench_user, authenticated;

-- RBAC benchmark: tenant "bench-rbac" with 10,000 invoices in ledger.invoices
-- (isolation + RBAC policies); bench_iso.invoices is an identical copy of the
-- whole table with isolation only; a member whose claims the scripts replay.
INSERT INTO tenancy.tenants (id, slug, name) VALUES ('00000000-0000-4000-8000-00000000aaaa', 'bench-rbac', 'Bench RBAC');
INSERT INTO tenancy.roles (tenant_id, name, is_system) VALUES ('00000000-0000-4000-8000-00000000aaaa', 'member', true);
INSERT INTO tenancy.role_permissions VALUES
    ('00000000-0000-4000-8000-00000000aaaa', 'member', '*', 'read'),
    ('00000000-0000-4000-8000-00000000aaaa', 'member', '*', 'create'),
    ('00000000-0000-4000-8000-00000000aaaa', 'member', '*', 'update');
INSERT INTO tenancy.user_roles VALUES ('00000000-0000-4000-8000-00000000aaaa', '0000000b-0000-4000-8000-0000000000aa', 'member');

ALTER TABLE ledger.invoices DISABLE TRIGGER invoices_derived;
INSERT INTO ledger.invoices (tenant_id, amount, currency, issue_date, due_date, reference, counterparty,
                             open_amount, status, created_at)
SELECT '00000000-0000-4000-8000-00000000aaaa', round((10 + g % 990)::numeric, 2), 'EUR', date '2026-01-01' + (g % 300),
       date '2026-01-31' + (g % 300), 'RB-' || g, 'Customer ' || (g % 97), round((10 + g % 990)::numeric, 2), 'open',
       timestamptz '2026-01-01' + (g * interval '1 minute')
FROM generate_series(1, 10000) g;
ALTER TABLE ledger.invoices ENABLE TRIGGER invoices_derived;

CREATE SCHEMA bench_iso;
CREATE TABLE bench_iso.invoices (LIKE ledger.invoices INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES);
INSERT INTO bench_iso.invoices SELECT * FROM ledger.invoices;
SELECT tenancy.enable('bench_iso.invoices');
GRANT USAGE ON SCHEMA bench_iso TO bench_user;
GRANT SELECT ON bench_iso.invoices TO bench_user;
GRANT EXECUTE ON FUNCTION tenancy.pre_request(), tenancy._pre_request() TO bench_user;

-- Idempotency benchmark: the same import as api.import_bank_transactions
-- (ledger.import_bank_transactions) without the idempotency key: the
-- baseline, in a schema the benchmark's PostgREST also exposes
-- (Content-Profile: bench_api).
CREATE SCHEMA bench_api;
CREATE FUNCTION bench_api.import_bank_transactions(jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM set_config('response.status', '201', true);
    RETURN ledger.import_bank_transactions($1);
END
$$;
GRANT USAGE ON SCHEMA bench_api TO authenticated;
GRANT EXECUTE ON FUNCTION bench_api.import_bank_transactions(jsonb) TO authenticated;

-- An empty pre-request hook: what PostgREST's extra statement per request
-- costs by itself, whatever the hook does.
CREATE FUNCTION bench_api.noop_pre_request() RETURNS void LANGUAGE sql AS '';
GRANT EXECUTE ON FUNCTION bench_api.noop_pre_request() TO anon, authenticated;

SELECT tenancy.enable_audit('ledger.invoices');

-- Rate limits: bench-rbac (made here, after tenants.sql) gets a budget no
-- run can spend as well. The rate-limit benchmark's baseline logs in as
-- authenticator_norl, for which counting is off (tenancy.rate_limit);
-- everything else about it is authenticator's.
INSERT INTO tenancy.rate_limits (tenant_id, requests, window_seconds)
SELECT id, 2147483647, 31 * 86400 FROM tenancy.tenants WHERE slug LIKE 'bench-%'
ON CONFLICT (tenant_id) DO NOTHING;
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticator_norl') THEN
        CREATE ROLE authenticator_norl LOGIN NOINHERIT;
    END IF;
END $$;
GRANT anon, authenticated TO authenticator_norl;
ALTER ROLE authenticator_norl SET tenancy.rate_limit = off;
