-- Settled history beside the open ledger of bench_recon (scripts/bench_reconcile):
-- :inv invoices fully paid (open_amount 0) and :tx transactions fully
-- matched (unmatched_amount 0), over the ten years before it. A call must
-- not pay for them: reconcile reads open items only.
\set ON_ERROR_STOP on
SELECT id AS tenant FROM tenancy.tenants WHERE slug = 'bench-recon' \gset
INSERT INTO bench_recon.invoices
SELECT NULL, format('00000003-0000-4000-8000-%s', lpad(g::text, 12, '0'))::uuid, 100 + g % 5000, 'EUR',
       DATE '1990-01-01' + g % 3650, DATE '1990-01-31' + g % 3650, 'OLD-' || g, 'Customer ' || g % 1000, 0,
       :'tenant'
FROM generate_series(1, :inv) g;
INSERT INTO bench_recon.transactions
SELECT NULL, format('00000004-0000-4000-8000-%s', lpad(g::text, 12, '0'))::uuid, 100 + g % 5000, 'EUR',
       DATE '1990-01-01' + g % 3650, 'Payment OLD-' || g % 1000000, 'Customer ' || g % 1000, :'tenant', 0
FROM generate_series(1, :tx) g;
VACUUM (FREEZE, ANALYZE) bench_recon.invoices;
VACUUM (FREEZE, ANALYZE) bench_recon.transactions;
