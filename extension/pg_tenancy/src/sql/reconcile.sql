-- Reconciliation: per-tenant rules, tenancy.reconcile (a wrapper around the
-- Rust matcher, src/reconcile/), the plain-language explanation of a match,
-- and for_each_tenant, which runs scheduled work once per active tenant.

-- Rules per tenant, one column per rule; NULL means the built-in default.
-- The rules themselves -- names, defaults, ranges -- are defined once, by the
-- matcher (extension/matching/src/rules.rs): tenancy._reconcile_rules()
-- checks a set of values against that definition, so this table holds no
-- ranges of its own.
CREATE TABLE tenancy.reconcile_rules (
    tenant_id                uuid PRIMARY KEY REFERENCES tenancy.tenants (id) ON DELETE CASCADE,
    amount_tolerance         numeric,
    amount_tolerance_pct     numeric,
    fee_ceiling              numeric,
    days_before              integer,
    days_after               integer,
    min_auto_score           numeric,
    max_invoices_per_payment integer,
    allow_currency_mismatch  boolean,
    updated_at               timestamptz NOT NULL DEFAULT now(),
    -- Added in 0.5.0, after updated_at, where the upgrade adds it.
    suggestion_days          integer
);
COMMENT ON TABLE tenancy.reconcile_rules IS 'Reconciliation rules per tenant; NULL = the built-in default. Read with tenancy.effective_reconcile_rules(), set with tenancy.set_reconcile_rules().';
SELECT pg_catalog.pg_extension_config_dump('tenancy.reconcile_rules', '');

-- Who may change the rules: reconciliation.manage (admins hold '*').
INSERT INTO tenancy.resources (name, actions) VALUES ('reconciliation', ARRAY['manage']);
SELECT pg_catalog.pg_extension_config_dump('tenancy.resources', 'WHERE name NOT IN (''roles'', ''reconciliation'')');

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

-- The current tenant's rules with the overrides of one call applied. Unknown
-- rule names, values of the wrong type and values out of range are errors
-- naming the rule.
CREATE FUNCTION tenancy.effective_reconcile_rules(overrides jsonb DEFAULT '{}')
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
COMMENT ON FUNCTION tenancy.effective_reconcile_rules(jsonb) IS 'The current tenant''s reconciliation rules with one call''s overrides applied (NULL = built-in default).';

-- Stores the current tenant's rules (the keys given; others unchanged).
CREATE FUNCTION tenancy.set_reconcile_rules(rules jsonb)
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
        suggestion_days = EXCLUDED.suggestion_days,
        updated_at = EXCLUDED.updated_at
    RETURNING * INTO r;
    RETURN r;
END
$$;
COMMENT ON FUNCTION tenancy.set_reconcile_rules(jsonb) IS 'Sets reconciliation rules of the current tenant, e.g. {"fee_ceiling": 15, "days_after": 90}; a JSON null restores a default. Needs reconciliation.manage.';

-- A plain SQL function without SET clauses, so that the planner inlines it
-- into the calling query: its rows go straight from tenancy._reconcile to
-- the caller, instead of through a second result set of their own.
CREATE FUNCTION tenancy.reconcile(invoices regclass, transactions regclass, rules jsonb DEFAULT '{}')
RETURNS TABLE (invoice_id text, transaction_id text, allocated_amount numeric, score numeric,
               grade text, group_id bigint, reasons jsonb)
LANGUAGE sql STABLE
AS $$
    SELECT m.invoice_id, m.transaction_id, m.allocated_amount, m.score, m.grade, m.group_id,
           m.reasons
    FROM tenancy._reconcile(invoices, transactions, tenancy._call_rules(rules)) m
$$;
COMMENT ON FUNCTION tenancy.reconcile(regclass, regclass, jsonb) IS 'Candidate matches between invoices (id, amount, currency, issue_date, due_date, reference, counterparty, open_amount) and bank transactions (id, amount, currency, booked_on, description, counterparty; unmatched_amount if present) of the current tenant, read as the caller, with score, grade (auto | suggested), group and reasons. rules overrides the tenant''s rules for this call.';

-- Reconciliations running now, one row per backend, as DBAs know them from
-- Postgres' pg_stat_progress_* views: the tenant, the phase, rows read and
-- matches made so far, and from pg_stat_activity who runs what. For
-- monitoring roles only: it shows every tenant's running calls.
CREATE VIEW tenancy.reconcile_progress AS
SELECT p.pid, a.datname, a.usename, p.tenant_id, t.slug AS tenant, p.phase,
       p.invoices_read, p.transactions_read, p.matches, p.windows,
       p.started_at, now() - p.started_at AS running_for, a.query
FROM tenancy._reconcile_progress() p
LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = p.pid
LEFT JOIN tenancy.tenants t ON t.id = p.tenant_id;
COMMENT ON VIEW tenancy.reconcile_progress IS 'Running tenancy.reconcile calls (and what runs them, e.g. apply_reconciliation): tenant, phase, invoices and transactions read, matches and windows so far. Readable by pg_monitor.';
GRANT SELECT ON tenancy.reconcile_progress TO pg_monitor;
GRANT EXECUTE ON FUNCTION tenancy._reconcile_progress() TO pg_monitor;

-- One plain-language sentence from a match's reasons.
CREATE FUNCTION tenancy.explain_reasons(reasons jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH parts AS (
        SELECT n, CASE r ->> 'kind'
            WHEN 'amount_equal' THEN 'amount equal'
            WHEN 'amount_within_tolerance' THEN format('amount within %s of the open amount', r ->> 'difference')
            WHEN 'bank_fee' THEN format('a bank fee of %s deducted', r ->> 'fee')
            WHEN 'partial_payment' THEN format('a partial payment, %s still open', r ->> 'remaining')
            WHEN 'overpayment' THEN format('overpaid by %s', r ->> 'excess')
            WHEN 'split_payment' THEN format('one payment for %s invoices', r ->> 'invoices')
            WHEN 'date' THEN
                CASE sign((r ->> 'days_after_issue')::int)
                    WHEN 0 THEN 'paid on the issue date'
                    WHEN 1 THEN format('paid %s day%s after issue', r ->> 'days_after_issue',
                                       CASE WHEN r ->> 'days_after_issue' = '1' THEN '' ELSE 's' END)
                    ELSE format('paid %s day%s before issue', abs((r ->> 'days_after_issue')::int),
                                CASE WHEN r ->> 'days_after_issue' = '-1' THEN '' ELSE 's' END)
                END
                || CASE WHEN (r ->> 'days_after_due')::int > 0
                        THEN format(' (%s days after the due date)', r ->> 'days_after_due') ELSE '' END
            WHEN 'reference' THEN format('invoice number %s found in the description%s', r ->> 'reference',
                                         CASE WHEN (r ->> 'exact')::boolean THEN '' ELSE ' with a typo' END)
            WHEN 'no_reference' THEN 'no invoice number in the description'
            WHEN 'counterparty' THEN format('counterparty name %s%% similar', round((r ->> 'similarity')::numeric * 100))
            WHEN 'ambiguous' THEN format('%s candidates scored about the same, so a person should decide',
                                         r ->> 'candidates')
            WHEN 'tie' THEN format('one of %s invoices that fit this payment equally: pick one', r ->> 'candidates')
            WHEN 'outside_window' THEN format('%s day%s outside the date window, so only a suggestion', r ->> 'days',
                                              CASE WHEN r ->> 'days' = '1' THEN '' ELSE 's' END)
            WHEN 'currency_differs' THEN format('currencies differ (invoice %s, payment %s)',
                                                r ->> 'invoice_currency', r ->> 'transaction_currency')
            ELSE r ->> 'kind'
        END AS part
        FROM jsonb_array_elements(CASE jsonb_typeof(reasons) WHEN 'array' THEN reasons ELSE '[]' END)
             WITH ORDINALITY AS e(r, n)
    )
    SELECT coalesce(upper(left(s, 1)) || substr(s, 2) || '.', 'No evidence recorded.')
    FROM (SELECT string_agg(part, ', ' ORDER BY n) AS s FROM parts) x
$$;
COMMENT ON FUNCTION tenancy.explain_reasons(jsonb) IS 'A plain-language sentence from the reasons of a match, e.g. "Amount equal, paid 3 days after issue, invoice number INV-1042 found in the description."';

-- The context of one tenant for scheduled work: set_tenant without its
-- interactive notice. The tenancy GUCs are superuser-only, hence DEFINER.
CREATE FUNCTION tenancy._job_context(tenant uuid)
RETURNS void
LANGUAGE sql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT tenancy._set_context(tenant, NULL) $$;

-- Runs fn() once per active tenant, each in its own transaction with that
-- tenant's context (no user: the caller's database grants apply). A failure
-- is reported as a WARNING and rolls back that tenant's work only. For
-- pg_cron jobs and DBAs; call it outside an explicit transaction block.
-- tenants (slugs or ids) narrows the run to those tenants. fn takes no
-- arguments, or one uuid: then it is given the tenant's id, as a constant
-- in the FROM clause, the form in which Citus runs a distributed function
-- on the node that holds the tenant (README: Scale out on Citus).
CREATE PROCEDURE tenancy.for_each_tenant(fn regprocedure, tenants text[] DEFAULT NULL)
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
