-- pg_tenancy 0.7.0 -> 0.8.0
--
-- 1. tenancy._reconcile returns reasons as jsonb, built by the extension from
-- the matcher's fields, and its amounts and scores as numerics built from
-- their integer and scale.
--
-- Why: tenancy.reconcile turned each row's reasons from JSON text into
-- jsonb with a cast (jsonb_in parsing ~200 bytes a row), and the amounts
-- went through their text into numeric_in: together about a quarter of a
-- call at 100,000 invoices (README: Reconciliation, cost). The rows are the
-- same, value for value; only tenancy._reconcile's declared type of reasons
-- changes (text -> jsonb), so it is dropped and created again, with the
-- grant privileges.sql gives it, and tenancy.reconcile loses its cast.
--
-- 2. tenancy.for_each_tenant also runs a function of one uuid, the tenant's
-- id, given as a constant: SELECT * FROM fn('<id>'::uuid).
--
-- Why: on Citus, a function distributed by that argument and colocated
-- with the tenant's tables runs on the worker that holds the tenant, in
-- that form only; the scheduled apply job (sql/30_cron.sql:
-- ledger_routed.apply_reconciliation_for(uuid)) then matches each tenant where its
-- rows are, instead of pulling them to the coordinator. Functions without
-- arguments are called as before.
-- ---------------------------------------------------------------------------

DROP FUNCTION tenancy._reconcile(regclass, regclass, text);
CREATE FUNCTION tenancy."_reconcile"(
	"invoices_rel" regclass,
	"transactions_rel" regclass,
	"rules" TEXT
) RETURNS TABLE (
	"invoice_id" TEXT,
	"transaction_id" TEXT,
	"allocated_amount" numeric,
	"score" numeric,
	"grade" TEXT,
	"group_id" bigint,
	"reasons" jsonb
)
VOLATILE
LANGUAGE c
AS 'MODULE_PATHNAME', 'reconcile_relations_wrapper';
REVOKE ALL ON FUNCTION tenancy._reconcile(regclass, regclass, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy._reconcile(regclass, regclass, text) TO PUBLIC;

CREATE OR REPLACE FUNCTION tenancy.reconcile(invoices regclass, transactions regclass, rules jsonb DEFAULT '{}')
RETURNS TABLE (invoice_id text, transaction_id text, allocated_amount numeric, score numeric,
               grade text, group_id bigint, reasons jsonb)
LANGUAGE sql STABLE
AS $$
    SELECT m.invoice_id, m.transaction_id, m.allocated_amount, m.score, m.grade, m.group_id,
           m.reasons
    FROM tenancy._reconcile(invoices, transactions, tenancy._call_rules(rules)) m
$$;

-- Runs fn() once per active tenant, each in its own transaction with that
-- tenant's context (no user: the caller's database grants apply). A failure
-- is reported as a WARNING and rolls back that tenant's work only. For
-- pg_cron jobs and DBAs; call it outside an explicit transaction block.
-- tenants (slugs or ids) narrows the run to those tenants. fn takes no
-- arguments, or one uuid: then it is given the tenant's id, as a constant
-- in the FROM clause, the form in which Citus runs a distributed function
-- on the node that holds the tenant (README: Scale out on Citus).
CREATE OR REPLACE PROCEDURE tenancy.for_each_tenant(fn regprocedure, tenants text[] DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
    t record;
    call text;
    takes_tenant boolean;
    ok integer := 0;
    failed integer := 0;
BEGIN
    -- Operators qualified: the procedure cannot pin its search_path (it
    -- commits), and runs with the caller's.
    SELECT CASE p.pronargs WHEN 0 THEN pg_catalog.format('SELECT %I.%I()', n.nspname, p.proname)
                           ELSE pg_catalog.format('SELECT * FROM %I.%I(', n.nspname, p.proname) END,
           p.pronargs OPERATOR(pg_catalog.=) 1
    INTO call, takes_tenant
    FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) p.pronamespace
    WHERE p.oid OPERATOR(pg_catalog.=) fn AND p.prokind OPERATOR(pg_catalog.=) 'f'
      AND (p.pronargs OPERATOR(pg_catalog.=) 0
           OR (p.pronargs OPERATOR(pg_catalog.=) 1
               AND p.proargtypes[0] OPERATOR(pg_catalog.=) 'pg_catalog.uuid'::pg_catalog.regtype::pg_catalog.oid));
    IF call IS NULL THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT',
            format('%s is not a function without arguments, nor one of a uuid (the tenant''s id)', coalesce(fn::text, 'NULL')),
            'Pass a function that takes no arguments or the tenant''s id, e.g. CALL tenancy.for_each_tenant(''ledger_routed.apply_reconciliation_for(uuid)'');');
    END IF;
    FOR t IN SELECT x.id, x.slug FROM tenancy.tenants x
             WHERE x.status = 'active' AND (tenants IS NULL OR x.slug = ANY (tenants) OR x.id::text = ANY (tenants))
             ORDER BY x.slug LOOP
        BEGIN
            PERFORM tenancy._job_context(t.id);
            IF takes_tenant THEN
                EXECUTE call || pg_catalog.quote_literal(t.id::text) || '::pg_catalog.uuid)';
            ELSE
                EXECUTE call;
            END IF;
            ok := ok + 1;
        EXCEPTION WHEN OTHERS THEN
            failed := failed + 1;
            RAISE WARNING 'tenancy.for_each_tenant: % failed for tenant "%": %', fn, t.slug, SQLERRM;
        END;
        COMMIT;
    END LOOP;
    RAISE NOTICE 'tenancy.for_each_tenant: % ran for % tenant(s), % failed', fn, ok, failed;
END
$$;
COMMENT ON PROCEDURE tenancy.for_each_tenant(regprocedure, text[]) IS 'Runs a function without arguments, or of the tenant''s id (uuid), once per active tenant (or only the given slugs/ids), each in its own transaction with that tenant set; failures are WARNINGs and roll back that tenant only. For pg_cron and DBAs.';
