-- Audit benchmark: a bulk import of 10,000 bank transactions (one INSERT,
-- as ledger.import_bank_transactions does) with tenancy.enable_audit on the
-- table vs off, alternating, 5 rounds each. Every round runs in a
-- subtransaction that is rolled back, so each starts from the same table.
-- Prints "median ms with audit|median ms without".
SET client_min_messages = warning;
CREATE TEMP TABLE audit_bench (audited boolean, ms numeric);
DO $$
DECLARE
    t0 timestamptz;
    took numeric;
    audited boolean;
BEGIN
    FOR round IN 1..6 LOOP
        FOREACH audited IN ARRAY ARRAY[true, false] LOOP
            BEGIN
                IF NOT audited THEN
                    PERFORM tenancy.disable_audit('ledger.bank_transactions');
                END IF;
                t0 := clock_timestamp();
                INSERT INTO ledger.bank_transactions (tenant_id, amount, currency, booked_on, description, counterparty)
                SELECT '00000000-0000-4000-8000-000000000002', round((10 + g % 990)::numeric, 2), 'EUR',
                       date '2026-01-01' + (g % 300), 'Payment RB-' || g || ' thank you', 'Customer ' || (g % 97)
                FROM generate_series(1, 10000) g;
                took := extract(epoch FROM clock_timestamp() - t0) * 1000;
                RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = took::text;
            EXCEPTION WHEN raise_exception THEN
                -- Round 1 warms caches on both sides and is not counted.
                IF round > 1 THEN
                    INSERT INTO audit_bench VALUES (audited, SQLERRM::numeric);
                END IF;
            END;
        END LOOP;
    END LOOP;
END
$$;
SELECT round((percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) FILTER (WHERE audited))::numeric, 1),
       round((percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) FILTER (WHERE NOT audited))::numeric, 1)
FROM audit_bench;
