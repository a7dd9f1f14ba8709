-- Reconciliation from psql: an analyst's own tables, with their own column
-- names, renamed by two views and matched by tenancy.reconcile.
\set VERBOSITY terse
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_tenancy;
RESET client_min_messages;
SELECT tenancy.create_tenant('books-a', 'Books A') IS NOT NULL AS created;
SELECT tenancy.create_tenant('books-b', 'Books B') IS NOT NULL AS created;

CREATE TABLE public.sales_invoices (
    invoice_no text PRIMARY KEY, customer text, total numeric(12, 2), ccy text,
    issued date, due date, unpaid numeric(12, 2));
CREATE TABLE public.statement_lines (
    line_no int PRIMARY KEY, value numeric(12, 2), ccy text, value_date date, memo text, payer text);
SELECT tenancy.enable('public.sales_invoices');
SELECT tenancy.enable('public.statement_lines');

-- The conventional columns, renamed; security_invoker keeps row level security.
CREATE VIEW public.recon_invoices WITH (security_invoker = true) AS
    SELECT invoice_no AS id, total AS amount, ccy AS currency, issued AS issue_date, due AS due_date,
           invoice_no AS reference, customer AS counterparty, unpaid AS open_amount
    FROM public.sales_invoices;
CREATE VIEW public.recon_transactions WITH (security_invoker = true) AS
    SELECT line_no AS id, value AS amount, ccy AS currency, value_date AS booked_on,
           memo AS description, payer AS counterparty
    FROM public.statement_lines;

SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'golden_recon') AS new_role \gset
\if :new_role
CREATE ROLE golden_recon NOLOGIN;
\endif
GRANT SELECT, INSERT ON public.sales_invoices, public.statement_lines TO golden_recon;
GRANT SELECT ON public.recon_invoices, public.recon_transactions TO golden_recon;
GRANT EXECUTE ON FUNCTION tenancy.set_tenant(text), tenancy.set_reconcile_rules(jsonb) TO golden_recon;

BEGIN;
SET LOCAL ROLE golden_recon;
SELECT tenancy.set_tenant('books-a') IS NOT NULL AS tenant_set;
INSERT INTO public.sales_invoices VALUES
    ('INV-1042', 'Globex GmbH',    1200.00, 'EUR', '2026-03-02', '2026-04-01', 1200.00),  -- paid exactly
    ('INV-1043', 'Initech AG',      350.00, 'EUR', '2026-03-05', '2026-04-04',  350.00),  -- bank fee
    ('INV-1044', 'Umbrella Corp',   480.00, 'EUR', '2026-03-06', '2026-04-05',  480.00),  -- typo in number
    ('INV-1045', 'Hooli Inc',       100.00, 'EUR', '2026-03-07', '2026-04-06',  100.00),  -- one payment,
    ('INV-1046', 'Hooli Inc',       250.00, 'EUR', '2026-03-08', '2026-04-07',  250.00),  --   two invoices
    ('INV-1047', 'Stark Ltd',      1000.00, 'EUR', '2026-03-09', '2026-04-08', 1000.00),  -- paid in two parts
    ('INV-1048', 'Wayne LLC',        75.00, 'EUR', '2026-03-10', '2026-04-09',   75.00),  -- monthly fee,
    ('INV-1049', 'Wayne LLC',        75.00, 'EUR', '2026-03-10', '2026-04-09',   75.00),  --   twice the same
    ('INV-1050', 'Tyrell SA',       640.00, 'USD', '2026-03-11', '2026-04-10',  640.00);  -- other currency
INSERT INTO public.statement_lines VALUES
    (1, 1200.00, 'EUR', '2026-03-05', 'Payment INV-1042 thanks', 'GLOBEX GMBH'),
    (2,  338.50, 'EUR', '2026-03-20', 'INV-1043',                'Initech AG'),
    (3,  480.00, 'EUR', '2026-03-28', 'invoice INV-1074',        'Umbrella Corp.'),
    (4,  350.00, 'EUR', '2026-03-30', 'INV-1045 INV-1046',       'Hooli Inc'),
    (5,  500.00, 'EUR', '2026-03-25', 'INV-1047 first half',     'Stark Ltd'),
    (6,  500.00, 'EUR', '2026-04-08', 'INV-1047 second half',    'Stark Ltd'),
    (7,   75.00, 'EUR', '2026-03-15', 'monthly fee',             'Wayne LLC'),
    (8,  640.00, 'EUR', '2026-03-20', 'INV-1050',                'Tyrell SA'),
    (9,  -42.00, 'EUR', '2026-03-21', 'card payment',            'Office shop');

-- Every candidate, with the evidence in plain language.
SELECT invoice_id, transaction_id AS line, allocated_amount, score, grade, group_id,
       tenancy.explain_reasons(reasons) AS why
FROM tenancy.reconcile('public.recon_invoices', 'public.recon_transactions')
ORDER BY group_id, invoice_id;

-- reasons is jsonb: amounts are exact numerics.
SELECT jsonb_pretty(reasons) FROM tenancy.reconcile('public.recon_invoices', 'public.recon_transactions')
WHERE invoice_id = 'INV-1043';

-- One call may override the tenant's rules: allow another currency.
SELECT invoice_id, transaction_id AS line, grade
FROM tenancy.reconcile('public.recon_invoices', 'public.recon_transactions', '{"allow_currency_mismatch": true}')
WHERE invoice_id = 'INV-1050';

-- The tenant's own rules (NULL = default): with a lower fee ceiling the
-- short payment is only a partial payment.
SELECT fee_ceiling, days_after FROM tenancy.set_reconcile_rules('{"fee_ceiling": 5}');
SELECT grade, tenancy.explain_reasons(reasons) AS why
FROM tenancy.reconcile('public.recon_invoices', 'public.recon_transactions')
WHERE invoice_id = 'INV-1043';
COMMIT;

-- Suggestions cast a wider net than auto: a prepayment naming its invoice
-- eight days before the invoice date (days_before is 5) is suggested, with
-- the gap; beyond suggestion_days it is not.
BEGIN;
SET LOCAL ROLE golden_recon;
SELECT tenancy.set_tenant('books-a') IS NOT NULL AS tenant_set;
INSERT INTO public.sales_invoices VALUES
    ('INV-2001', 'Acme Co', 90.00, 'EUR', '2026-05-20', '2026-06-19', 90.00);
INSERT INTO public.statement_lines VALUES (20, 90.00, 'EUR', '2026-05-12', 'Prepayment INV-2001', 'Acme Co');
SELECT invoice_id, transaction_id AS line, grade, tenancy.explain_reasons(reasons) AS why
FROM tenancy.reconcile('public.recon_invoices', 'public.recon_transactions') WHERE invoice_id = 'INV-2001';
SELECT count(*) AS beyond_two_days
FROM tenancy.reconcile('public.recon_invoices', 'public.recon_transactions', '{"suggestion_days": 2}')
WHERE invoice_id = 'INV-2001';
ROLLBACK;

-- Another tenant sees none of it.
BEGIN;
SET LOCAL ROLE golden_recon;
SELECT tenancy.set_tenant('books-b') IS NOT NULL AS tenant_set;
SELECT count(*) AS candidates FROM tenancy.reconcile('public.recon_invoices', 'public.recon_transactions');
ROLLBACK;

-- No tenant: fail closed.
SET ROLE golden_recon;
SELECT * FROM tenancy.reconcile('public.recon_invoices', 'public.recon_transactions');
RESET ROLE;

-- Bad input: errors name the relation, the column or the rule.
CREATE VIEW public.recon_no_currency AS SELECT line_no AS id, value AS amount FROM public.statement_lines;
CREATE VIEW public.recon_text_amount WITH (security_invoker = true) AS
    SELECT line_no AS id, memo AS amount, ccy AS currency, value_date AS booked_on, memo AS description,
           payer AS counterparty FROM public.statement_lines;
CREATE VIEW public.recon_null_open WITH (security_invoker = true) AS
    SELECT id, amount, currency, issue_date, due_date, reference, counterparty, NULL::numeric AS open_amount
    FROM public.recon_invoices;
-- Amounts of 10^20 or more, or with more digits than the matcher keeps exactly.
CREATE VIEW public.recon_huge_amount WITH (security_invoker = true) AS
    SELECT id, CASE WHEN id = 1 THEN 1e20 ELSE amount END AS amount, currency, booked_on, description,
           counterparty
    FROM public.recon_transactions;
CREATE VIEW public.recon_long_amount WITH (security_invoker = true) AS
    SELECT id, amount + 1e-29 AS amount, currency, issue_date, due_date, reference, counterparty,
           open_amount + 1e-29 AS open_amount
    FROM public.recon_invoices;
GRANT SELECT ON public.recon_no_currency, public.recon_text_amount, public.recon_null_open,
    public.recon_huge_amount, public.recon_long_amount TO golden_recon;
BEGIN;
SET LOCAL ROLE golden_recon;
SELECT tenancy.set_tenant('books-a') IS NOT NULL AS tenant_set;
SAVEPOINT s;
SELECT * FROM tenancy.reconcile('public.recon_invoices', 'public.recon_no_currency');
ROLLBACK TO s;
SELECT * FROM tenancy.reconcile('public.recon_invoices', 'public.recon_text_amount');
ROLLBACK TO s;
SELECT * FROM tenancy.reconcile('public.recon_null_open', 'public.recon_transactions');
ROLLBACK TO s;
SELECT * FROM tenancy.reconcile('public.recon_invoices', 'public.recon_huge_amount');
ROLLBACK TO s;
SELECT * FROM tenancy.reconcile('public.recon_long_amount', 'public.recon_transactions');
ROLLBACK TO s;
SELECT * FROM tenancy.reconcile('public.recon_invoices', 'public.sales_invoices_pkey');
ROLLBACK TO s;
SELECT * FROM tenancy.reconcile('public.recon_invoices', 'public.recon_transactions', '{"fee_cap": 3}');
ROLLBACK TO s;
SELECT * FROM tenancy.reconcile('public.recon_invoices', 'public.recon_transactions', '{"days_after": "soon"}');
ROLLBACK TO s;
SELECT * FROM tenancy.reconcile('public.recon_invoices', 'public.recon_transactions', '{"min_auto_score": 2}');
ROLLBACK TO s;
SELECT * FROM tenancy.reconcile('public.recon_invoices', 'public.statement_lines');
ROLLBACK;

-- A table that is not tenant-scoped, read by a role that sees every tenant's rows.
CREATE TABLE public.shared_lines (id int, amount numeric, currency text, booked_on date, description text,
                                  counterparty text, tenant_id uuid);
INSERT INTO public.shared_lines VALUES (1, 10, 'EUR', '2026-03-01', '', '', gen_random_uuid());
GRANT SELECT ON public.shared_lines TO golden_recon;
BEGIN;
SET LOCAL ROLE golden_recon;
SELECT tenancy.set_tenant('books-a') IS NOT NULL AS tenant_set;
SELECT * FROM tenancy.reconcile('public.recon_invoices', 'public.shared_lines');
ROLLBACK;

-- Long descriptions, kept compressed in the row or out of line, are read
-- whole: the invoice number at the end of each is found.
CREATE TABLE public.long_lines (id int, amount numeric, currency text, booked_on date, description text,
                                counterparty text);
INSERT INTO public.long_lines VALUES
    (1, 480.00, 'EUR', '2026-03-28', repeat('x', 10000) || ' INV-1044', 'Umbrella Corp.'),
    (2, 1000.00, 'EUR', '2026-03-25',
     (SELECT string_agg(md5(g::text), ' ') FROM generate_series(1, 400) g) || ' INV-1047', 'Stark Ltd');
SELECT id, octet_length(description) AS length, pg_column_size(description) AS stored
FROM public.long_lines ORDER BY id;
GRANT SELECT ON public.long_lines TO golden_recon;
BEGIN;
SET LOCAL ROLE golden_recon;
SELECT tenancy.set_tenant('books-a') IS NOT NULL AS tenant_set;
SELECT invoice_id, transaction_id AS line, grade, tenancy.explain_reasons(reasons) AS why
FROM tenancy.reconcile('public.recon_invoices', 'public.long_lines') ORDER BY line;
ROLLBACK;

-- Clean up.
DROP TABLE public.shared_lines, public.long_lines;
DROP VIEW public.recon_no_currency, public.recon_text_amount, public.recon_null_open,
    public.recon_huge_amount, public.recon_long_amount;
DROP VIEW public.recon_invoices, public.recon_transactions;
DROP TABLE public.sales_invoices, public.statement_lines;
SELECT tenancy.drop_tenant('books-a');
SELECT tenancy.drop_tenant('books-b');
REVOKE EXECUTE ON FUNCTION tenancy.set_tenant(text), tenancy.set_reconcile_rules(jsonb) FROM golden_recon;
DROP ROLE golden_recon;
