-- The benchmark tenants, shared by scripts/bench (data.sql) and
-- scripts/bench_citus: 1,000 tenants x 1,000 invoices in ledger.invoices, a
-- member of tenant 1 for the HTTP benchmarks' token, and budgets no run can
-- spend (requests are counted, the cost measured, never refused).
SET client_min_messages = warning;
-- Bulk-loaded without audit entries (a million rows of setup are not what is
-- measured); the caller switches auditing back on when it is done loading.
SELECT tenancy.disable_audit('ledger.invoices');

INSERT INTO tenancy.tenants (id, slug, name)
SELECT ('00000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid, 'bench-' || n, 'Bench tenant ' || n
FROM generate_series(1, 1000) n;

-- One member in tenant 1, for the HTTP benchmark's token.
INSERT INTO tenancy.roles (tenant_id, name, is_system) VALUES ('00000000-0000-4000-8000-000000000001', 'member', true);
INSERT INTO tenancy.role_permissions VALUES ('00000000-0000-4000-8000-000000000001', 'member', '*', 'read'),
                                            ('00000000-0000-4000-8000-000000000001', 'member', '*', 'create');
INSERT INTO tenancy.user_roles VALUES ('00000000-0000-4000-8000-000000000001', '0000000b-0000-4000-8000-00000000be0c', 'member');

ALTER TABLE ledger.invoices DISABLE TRIGGER invoices_derived;
INSERT INTO ledger.invoices (tenant_id, amount, currency, issue_date, due_date, reference, counterparty,
                             open_amount, status, created_at)
SELECT t.id, a.amount, 'EUR', d.issue, d.issue + 30, 'INV-' || g, 'Customer ' || (g % 97),
       a.amount, 'open', timestamptz '2026-01-01' + (g * interval '7 minutes')
FROM tenancy.tenants t
CROSS JOIN generate_series(1, 1000) g
CROSS JOIN LATERAL (SELECT round((10 + (hashint4(g) & 65535) / 7.0)::numeric, 2) AS amount) a
CROSS JOIN LATERAL (SELECT date '2026-01-01' + (g % 300) AS issue) d
WHERE t.slug LIKE 'bench-%';
ALTER TABLE ledger.invoices ENABLE TRIGGER invoices_derived;

INSERT INTO tenancy.rate_limits (tenant_id, requests, window_seconds)
SELECT id, 2147483647, 31 * 86400 FROM tenancy.tenants WHERE slug LIKE 'bench-%';
