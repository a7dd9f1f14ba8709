-- pg_tenancy 0.7.0 -> 0.8.0
--
-- tenancy._reconcile returns reasons as jsonb, built by the extension from
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
