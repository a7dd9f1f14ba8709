-- One measurement session of scripts/bench_reconcile: timings (best of a few
-- runs, as the API role under row level security) and F1 against the truth.
\set QUIET on
\pset tuples_only on
\pset format unaligned
BEGIN;
SELECT tenancy.set_tenant('bench-recon') IS NOT NULL AS tenant_set \gset
SET LOCAL ROLE authenticated;
SET LOCAL work_mem = '64MB';
CREATE TEMP TABLE timings (what text, ms numeric);
-- Warm both inputs into shared buffers first.
SELECT bench_recon.ms('SELECT count(*), sum(amount) FROM bench_recon.invoices') \gset
SELECT bench_recon.ms('SELECT count(*), sum(amount) FROM bench_recon.transactions') \gset
INSERT INTO timings SELECT 'scan', bench_recon.ms(
    'SELECT (SELECT count(*) FROM (SELECT * FROM bench_recon.invoices OFFSET 0) i), (SELECT count(*) FROM (SELECT * FROM bench_recon.transactions OFFSET 0) t)')
    FROM generate_series(1, 5);
-- Each call's DEBUG1 line (to stderr) tells its matching time apart.
SET LOCAL client_min_messages = debug1;
INSERT INTO timings SELECT 'reconcile', bench_recon.ms(format(
    'CREATE TEMP TABLE r%s AS SELECT * FROM tenancy.reconcile(%L, %L)', g, 'bench_recon.invoices', 'bench_recon.transactions'))
    FROM generate_series(1, 3) g;
-- The same, its rows counted in the database instead of written: what an
-- app-side matcher is compared with (its matches stay in its memory too).
INSERT INTO timings SELECT 'count', bench_recon.ms(format(
    'SELECT count(*) FROM tenancy.reconcile(%L, %L)', 'bench_recon.invoices', 'bench_recon.transactions'))
    FROM generate_series(1, 3) g;
SET LOCAL client_min_messages = warning;
-- A lower bound for any matcher that reads its inputs with SQL and returns
-- its rows, measured without matching: computing every column tenancy.reconcile
-- reads (count(q.*) needs each row whole), and writing reconcile's rows.
INSERT INTO timings SELECT 'read', bench_recon.ms(
    'SELECT (SELECT count(q.*) FROM (SELECT id, amount, currency, issue_date, due_date, reference, counterparty, open_amount FROM bench_recon.invoices OFFSET 0) q),
            (SELECT count(q.*) FROM (SELECT id, amount, currency, booked_on, description, counterparty FROM bench_recon.transactions OFFSET 0) q)')
    FROM generate_series(1, 5);
INSERT INTO timings SELECT 'write', bench_recon.ms(format('CREATE TEMP TABLE w%s AS SELECT * FROM r1', g))
    FROM generate_series(1, 3) g;
INSERT INTO timings SELECT 'plain', bench_recon.ms(format('CREATE TEMP TABLE p%s AS SELECT * FROM bench_recon.plain_match()', g))
    FROM generate_series(1, 2) g;

CREATE TEMP VIEW scored AS
    WITH sets AS (
        SELECT 'reconcile auto+suggested' AS side, invoice_id::uuid AS i, transaction_id::uuid AS t FROM r1
        UNION ALL SELECT 'reconcile auto', invoice_id::uuid, transaction_id::uuid FROM r1 WHERE grade = 'auto'
        UNION ALL SELECT 'plain SQL', invoice_id, transaction_id FROM p1
    ), counted AS (
        SELECT side, count(DISTINCT (i, t)) AS found,
               count(DISTINCT (i, t)) FILTER (WHERE EXISTS (
                   SELECT 1 FROM bench_recon.truth x WHERE x.invoice_id = i AND x.transaction_id = t)) AS correct
        FROM sets GROUP BY side
    )
    SELECT side, found, correct, (SELECT count(*) FROM bench_recon.truth) AS truth FROM counted;
SELECT format('time    %s %s ms', what, min(ms)) FROM timings GROUP BY what ORDER BY what;
SELECT format('quality %s found=%s right=%s truth=%s', side, found, correct, truth) FROM scored ORDER BY side;
ROLLBACK;
