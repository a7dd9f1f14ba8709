-- pg_tenancy 0.4.0 -> 0.5.0
--
-- Each part says why it changes. Released SQL (released/pg_tenancy--0.4.0.sql)
-- stays as it was; a database on 0.4.0 reaches exactly what a fresh 0.5.0
-- install creates (tests/released_sql.sh checks it).

-- ---------------------------------------------------------------------------
-- 1. Reconciliation rules are defined once, by the matcher.
--
-- Why: 0.4.0 spelled out the rules' names, types and ranges in four places
-- (this table's CHECK constraints, effective_reconcile_rules, the hint of
-- set_reconcile_rules and the Rust glue, which took them as eight positional
-- arguments), and they could drift apart. Now the matcher's definition
-- (extension/matching/src/rules.rs) is the only one: the rules of a call
-- travel as one JSON object, tenancy._reconcile_rules() checks a set of values
-- against the definition, and the table only stores values.
--
-- What changes: tenancy._reconcile takes (invoices, transactions, rules text);
-- tenancy._reconcile_rules(text) and tenancy._call_rules(jsonb) are new;
-- effective_reconcile_rules, set_reconcile_rules and reconcile call them; the
-- table's range constraints go (the same ranges are checked before any
-- write). Same results: a rule out of range is still refused with 22023
-- (400 over HTTP) naming the rule.
-- ---------------------------------------------------------------------------

DROP FUNCTION tenancy._reconcile(regclass, regclass, numeric, numeric, numeric, integer, integer, numeric,
                                 integer, boolean);

CREATE FUNCTION tenancy._reconcile(
    "invoices_rel" regclass,
    "transactions_rel" regclass,
    "rules" text
) RETURNS TABLE (
    "invoice_id" text,
    "transaction_id" text,
    "allocated_amount" numeric,
    "score" numeric,
    "grade" text,
    "group_id" bigint,
    "reasons" text
)
VOLATILE
LANGUAGE c
AS 'MODULE_PATHNAME', 'reconcile_relations_wrapper';

CREATE FUNCTION tenancy._reconcile_rules("rules" text) RETURNS text
STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'checked_rules_wrapper';

ALTER TABLE tenancy.reconcile_rules
    DROP CONSTRAINT reconcile_rules_amount_tolerance,
    DROP CONSTRAINT reconcile_rules_amount_tolerance_pct,
    DROP CONSTRAINT reconcile_rules_fee_ceiling,
    DROP CONSTRAINT reconcile_rules_days_before,
    DROP CONSTRAINT reconcile_rules_days_after,
    DROP CONSTRAINT reconcile_rules_min_auto_score,
    DROP CONSTRAINT reconcile_rules_max_invoices;

-- The rules of one call, as the text of one JSON object: the current
-- tenant's stored rules with the call's overrides on top (a JSON null
-- restores a default), checked against the matcher's definition of the rules
-- by tenancy._reconcile_rules(). A bad rule is INVALID_ARGUMENT (22023; 400
-- over HTTP) naming the rule.
CREATE FUNCTION tenancy._call_rules(overrides jsonb)
RETURNS text
LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    merged text;
    message text;
    hint text;
BEGIN
    merged := (coalesce((SELECT jsonb_strip_nulls(to_jsonb(x) - 'tenant_id' - 'updated_at')
                         FROM tenancy.reconcile_rules x WHERE x.tenant_id = tenancy.tenant_scope()), '{}')
               || coalesce(overrides, '{}'))::text;
    RETURN tenancy._reconcile_rules(merged);
EXCEPTION WHEN invalid_parameter_value THEN
    GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
    PERFORM tenancy.raise_error('INVALID_ARGUMENT', message, hint);
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION tenancy.effective_reconcile_rules(overrides jsonb DEFAULT '{}')
RETURNS tenancy.reconcile_rules
LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r tenancy.reconcile_rules;
BEGIN
    r := jsonb_populate_record(NULL::tenancy.reconcile_rules, tenancy._call_rules(overrides)::jsonb);
    r.tenant_id := tenancy.current_tenant_id();
    r.updated_at := (SELECT x.updated_at FROM tenancy.reconcile_rules x WHERE x.tenant_id = r.tenant_id);
    RETURN r;
END
$$;

CREATE OR REPLACE FUNCTION tenancy.set_reconcile_rules(rules jsonb)
RETURNS tenancy.reconcile_rules
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r tenancy.reconcile_rules;
BEGIN
    PERFORM tenancy.require_permission('reconciliation', 'manage');
    r := tenancy.effective_reconcile_rules(rules);
    r.updated_at := now();
    INSERT INTO tenancy.reconcile_rules VALUES (r.*)
    ON CONFLICT ON CONSTRAINT reconcile_rules_pkey DO UPDATE SET
        amount_tolerance = EXCLUDED.amount_tolerance,
        amount_tolerance_pct = EXCLUDED.amount_tolerance_pct,
        fee_ceiling = EXCLUDED.fee_ceiling,
        days_before = EXCLUDED.days_before,
        days_after = EXCLUDED.days_after,
        min_auto_score = EXCLUDED.min_auto_score,
        max_invoices_per_payment = EXCLUDED.max_invoices_per_payment,
        allow_currency_mismatch = EXCLUDED.allow_currency_mismatch,
        updated_at = EXCLUDED.updated_at
    RETURNING * INTO r;
    RETURN r;
END
$$;

CREATE OR REPLACE FUNCTION tenancy.reconcile(invoices regclass, transactions regclass, rules jsonb DEFAULT '{}')
RETURNS TABLE (invoice_id text, transaction_id text, allocated_amount numeric, score numeric,
               grade text, group_id bigint, reasons jsonb)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT m.invoice_id, m.transaction_id, m.allocated_amount, m.score, m.grade, m.group_id, m.reasons::jsonb
    FROM tenancy._reconcile(invoices, transactions, tenancy._call_rules(rules)) m
$$;

REVOKE ALL ON FUNCTION tenancy._reconcile(regclass, regclass, text), tenancy._reconcile_rules(text),
    tenancy._call_rules(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy._reconcile(regclass, regclass, text), tenancy._reconcile_rules(text),
    tenancy._call_rules(jsonb) TO PUBLIC;
