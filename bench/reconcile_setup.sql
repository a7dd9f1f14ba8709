-- Reconciliation benchmark data: one tenant's synthetic ledger with ground
-- truth (extension/matching/examples/ledger_csv.rs), in tenant-scoped tables
-- so tenancy.reconcile reads them under row level security, as in production.
-- :dir is where the CSV files are.
DROP SCHEMA IF EXISTS bench_recon CASCADE;
SELECT tenancy.drop_tenant(slug) FROM tenancy.tenants WHERE slug = 'bench-recon';
CREATE SCHEMA bench_recon;
CREATE TABLE bench_recon.invoices (
    n int, id uuid, amount numeric, currency text, issue_date date, due_date date,
    reference text, counterparty text, open_amount numeric, tenant_id uuid);
CREATE TABLE bench_recon.transactions (
    n int, id uuid, amount numeric, currency text, booked_on date, description text,
    counterparty text, tenant_id uuid, unmatched_amount numeric);
CREATE TABLE bench_recon.truth (invoice_id uuid, transaction_id uuid, PRIMARY KEY (invoice_id, transaction_id));
CREATE TEMP TABLE raw_inv (n int, amount numeric, currency text, issue int, due int, reference text, counterparty text, open numeric);
CREATE TEMP TABLE raw_tx (n int, amount numeric, currency text, booked int, description text, counterparty text);
CREATE TEMP TABLE raw_truth (inv int, tx int);
\set inv_csv :dir '/invoices.csv'
\set tx_csv :dir '/transactions.csv'
\set truth_csv :dir '/truth.csv'
COPY raw_inv FROM :'inv_csv' (FORMAT csv);
COPY raw_tx FROM :'tx_csv' (FORMAT csv);
COPY raw_truth FROM :'truth_csv' (FORMAT csv);
SELECT tenancy.create_tenant('bench-recon', 'Reconciliation benchmark') AS tenant \gset
CREATE FUNCTION pg_temp.uid(prefix int, n int) RETURNS uuid LANGUAGE sql IMMUTABLE
AS $$ SELECT format('%s-0000-4000-8000-%s', lpad(prefix::text, 8, '0'), lpad(n::text, 12, '0'))::uuid $$;
INSERT INTO bench_recon.invoices
SELECT n, pg_temp.uid(1, n), amount, currency, DATE '2000-01-01' + issue, DATE '2000-01-01' + due,
       reference, counterparty, open, :'tenant' FROM raw_inv;
INSERT INTO bench_recon.transactions
SELECT n, pg_temp.uid(2, n), amount, currency, DATE '2000-01-01' + booked, description, counterparty, :'tenant',
       greatest(amount, 0)
FROM raw_tx;
INSERT INTO bench_recon.truth SELECT pg_temp.uid(1, inv), pg_temp.uid(2, tx) FROM raw_truth ON CONFLICT DO NOTHING;
SELECT tenancy.enable('bench_recon.invoices');
SELECT tenancy.enable('bench_recon.transactions');
-- The open-item indexes of the reference ledger (sql/10_ledger.sql).
CREATE INDEX ON bench_recon.invoices (tenant_id, issue_date) WHERE (open_amount <> 0 OR open_amount IS NULL);
CREATE INDEX ON bench_recon.transactions (tenant_id, booked_on) WHERE (unmatched_amount <> 0 OR unmatched_amount IS NULL);
GRANT USAGE ON SCHEMA bench_recon TO authenticated;
GRANT SELECT ON bench_recon.invoices, bench_recon.transactions, bench_recon.truth TO authenticated;
VACUUM (FREEZE, ANALYZE) bench_recon.invoices;
VACUUM (FREEZE, ANALYZE) bench_recon.transactions;

-- The baseline: a strong plain-SQL matcher (README "Benchmarks") — exact open amount,
-- same currency, booking inside the date window; candidates naming the
-- invoice number in the description first, then the closest date; greedy
-- one-to-one.
CREATE FUNCTION bench_recon.plain_match()
RETURNS TABLE (invoice_id uuid, transaction_id uuid)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c record;
BEGIN
    CREATE TEMP TABLE IF NOT EXISTS used_inv (id uuid PRIMARY KEY);
    CREATE TEMP TABLE IF NOT EXISTS used_tx (id uuid PRIMARY KEY);
    TRUNCATE used_inv, used_tx;
    FOR c IN
        SELECT i.id AS iid, t.id AS tid
        FROM bench_recon.invoices i
        JOIN bench_recon.transactions t
          ON t.amount = i.open_amount AND t.currency = i.currency
         AND t.booked_on BETWEEN i.issue_date - 5 AND coalesce(i.due_date, i.issue_date) + 60
        ORDER BY strpos(lower(t.description), lower(i.reference)) > 0 DESC,
                 abs(t.booked_on - i.issue_date), i.id, t.id
    LOOP
        CONTINUE WHEN EXISTS (SELECT 1 FROM used_inv u WHERE u.id = c.iid)
                   OR EXISTS (SELECT 1 FROM used_tx u WHERE u.id = c.tid);
        INSERT INTO used_inv VALUES (c.iid);
        INSERT INTO used_tx VALUES (c.tid);
        invoice_id := c.iid;
        transaction_id := c.tid;
        RETURN NEXT;
    END LOOP;
END
$$;
GRANT EXECUTE ON FUNCTION bench_recon.plain_match() TO authenticated;

-- Milliseconds one statement takes, run as the caller.
CREATE FUNCTION bench_recon.ms(statement text)
RETURNS numeric
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    started timestamptz := clock_timestamp();
BEGIN
    EXECUTE statement;
    RETURN round(extract(epoch FROM clock_timestamp() - started) * 1000, 1);
END
$$;
GRANT EXECUTE ON FUNCTION bench_recon.ms(text) TO authenticated;

-- One tenant's reconcile as a function of the tenant: scripts/bench_citus
-- distributes it with the tenant's rows, so that it runs on the tenant's
-- worker. Set-returning, so a NULL argument would crash the Citus node
-- planning the call (README, Scale out on Citus): benchmark clusters only.
CREATE FUNCTION bench_recon.reconcile_for(tenant uuid)
RETURNS SETOF text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF tenant IS DISTINCT FROM tenancy.tenant_scope() THEN
        RAISE EXCEPTION 'tenant % is not the current tenant', tenant;
    END IF;
    RETURN QUERY SELECT invoice_id FROM tenancy.reconcile('bench_recon.invoices', 'bench_recon.transactions');
END
$$;
GRANT EXECUTE ON FUNCTION bench_recon.reconcile_for(uuid) TO authenticated;
