-- Demo data for the local stack (scripts/run loads it; tests do not rely on
-- it). Two tenants, users of different roles, invoices and bank transactions.
-- Users are JWT subjects with fixed ids so that dev tokens are easy to make:
--   alice 0000000a-0000-4000-8000-000000000001  acme    admin
--   bob   0000000b-0000-4000-8000-000000000002  acme    readonly
--   carol 0000000c-0000-4000-8000-000000000003  globex  admin
--   dave  0000000d-0000-4000-8000-000000000004  globex  member
DO $$
DECLARE
    acme uuid;
    globex uuid;
BEGIN
    IF EXISTS (SELECT 1 FROM tenancy.tenants WHERE slug IN ('acme', 'globex')) THEN
        RAISE NOTICE 'demo tenants already exist; demo data left as it is';
        RETURN;
    END IF;
    acme := tenancy.create_tenant('acme', 'Acme Corporation');
    globex := tenancy.create_tenant('globex', 'Globex Inc.');
    PERFORM tenancy.add_member('acme', '0000000a-0000-4000-8000-000000000001', 'admin');
    PERFORM tenancy.add_member('acme', '0000000b-0000-4000-8000-000000000002', 'readonly');
    PERFORM tenancy.add_member('globex', '0000000c-0000-4000-8000-000000000003', 'admin');
    PERFORM tenancy.add_member('globex', '0000000d-0000-4000-8000-000000000004', 'member');

    INSERT INTO ledger.invoices (tenant_id, amount, currency, issue_date, due_date, reference, counterparty) VALUES
        (acme, 1200.00, 'EUR', '2026-10-01', '2026-10-31', 'INV-1042', 'Initech GmbH'),
        (acme,  350.50, 'EUR', '2026-10-03', '2026-11-02', 'INV-1043', 'Umbrella Ltd'),
        (acme,  980.00, 'EUR', '2026-10-07', '2026-11-06', 'INV-1044', 'Hooli SARL'),
        (acme,  480.00, 'USD', '2026-10-09', '2026-11-08', 'INV-1045', 'Vandelay Industries'),
        (globex, 2500.00, 'USD', '2026-10-02', '2026-11-01', 'GX-2001', 'Wonka Industries'),
        (globex,  125.00, 'USD', '2026-10-05', '2026-11-04', 'GX-2002', 'Stark Retail');

    INSERT INTO ledger.bank_transactions (tenant_id, amount, currency, booked_on, description, counterparty) VALUES
        (acme, 1200.00, 'EUR', '2026-10-14', 'SEPA credit INV-1042 Initech', 'INITECH GMBH'),
        (acme,  348.00, 'EUR', '2026-10-20', 'Payment INV1043 less fees', 'Umbrella Ltd'),
        (acme,  -45.90, 'EUR', '2026-10-21', 'Card: office supplies', 'Staples'),
        (globex, 2500.00, 'USD', '2026-10-29', 'WIRE GX-2001 WONKA', 'Wonka Industries');
END
$$;
