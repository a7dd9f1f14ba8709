-- The api schema: all that PostgREST exposes. Views are security_invoker so
-- the ledger's row level security applies to the caller, never to the view
-- owner. Every object carries a COMMENT for PostgREST's OpenAPI output.
CREATE SCHEMA IF NOT EXISTS api;
COMMENT ON SCHEMA api IS 'pg_tenancy reference API: every row is the caller''s tenant''s.';

CREATE OR REPLACE VIEW api.invoices WITH (security_invoker = true) AS
    SELECT id, tenant_id, amount, currency, issue_date, due_date, reference,
           counterparty, open_amount, status, created_at
    FROM ledger.invoices;
COMMENT ON VIEW api.invoices IS 'Invoices of your tenant. open_amount, status and created_at are maintained by the ledger.';

CREATE OR REPLACE VIEW api.bank_transactions WITH (security_invoker = true) AS
    SELECT id, tenant_id, amount, currency, booked_on, description, counterparty,
           status, created_at
    FROM ledger.bank_transactions;
COMMENT ON VIEW api.bank_transactions IS 'Bank transactions of your tenant.';

CREATE OR REPLACE FUNCTION api.health()
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT jsonb_build_object('status', 'ok', 'version', tenancy.version()) $$;
COMMENT ON FUNCTION api.health() IS 'Liveness check; needs no token.';

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA api FROM PUBLIC;
GRANT USAGE ON SCHEMA api TO anon, authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON api.invoices, api.bank_transactions TO authenticated;
GRANT EXECUTE ON FUNCTION api.health() TO anon, authenticated;
