-- pg_tenancy 0.4.0 -> 0.5.0
--
-- Each part says why it changes. Released SQL (released/pg_tenancy--0.4.0.sql)
-- stays as it was; a database on 0.4.0 reaches exactly what a fresh 0.5.0
-- install creates (tests/released_sql.sh checks it). Restart Postgres after
-- installing the new library (it is preloaded), then ALTER EXTENSION
-- pg_tenancy UPDATE.

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
-- write). A rule out of range is still refused with 22023 (400 over HTTP)
-- naming the rule. A new rule, suggestion_days (part 2), gets its column.
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
    DROP CONSTRAINT reconcile_rules_max_invoices,
    ADD COLUMN suggestion_days integer;

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
COMMENT ON FUNCTION tenancy.effective_reconcile_rules(jsonb) IS 'The current tenant''s reconciliation rules with one call''s overrides applied (NULL = built-in default).';

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
        suggestion_days = EXCLUDED.suggestion_days,
        updated_at = EXCLUDED.updated_at
    RETURNING * INTO r;
    RETURN r;
END
$$;
COMMENT ON FUNCTION tenancy.set_reconcile_rules(jsonb) IS 'Sets reconciliation rules of the current tenant, e.g. {"fee_ceiling": 15, "days_after": 90}; a JSON null restores a default. Needs reconciliation.manage.';

REVOKE ALL ON FUNCTION tenancy._reconcile(regclass, regclass, text), tenancy._reconcile_rules(text),
    tenancy._call_rules(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy._reconcile(regclass, regclass, text), tenancy._reconcile_rules(text),
    tenancy._call_rules(jsonb) TO PUBLIC;

-- ---------------------------------------------------------------------------
-- 2. Reconciliation at ledger scale.
--
-- Why: 0.4.0 read every row of both relations, settled history included, and
-- held them all in memory: a tenant with 1,000,000 settled invoices paid for
-- all of them on every call. Now only open invoices (open_amount <> 0) and
-- unmatched transactions (unmatched_amount <> 0, when the relation has it)
-- are read, through cursors, and open sets larger than the setting
-- tenancy.reconcile_memory are matched in windows of payment days (the
-- library's part). tenancy.reconcile becomes a plain SQL function the planner
-- inlines, so its rows are not copied into a second result set. Ties are
-- offered as several suggestions ('tie' reasons), and a payment that names an
-- invoice and pays it exactly a few days outside the date window is suggested
-- (rule suggestion_days, 'outside_window' reasons): explain_reasons words both.
-- ---------------------------------------------------------------------------

-- A plain SQL function without SET clauses, so that the planner inlines it
-- into the calling query: its rows go straight from tenancy._reconcile to
-- the caller, instead of through a second result set of their own.
CREATE OR REPLACE FUNCTION tenancy.reconcile(invoices regclass, transactions regclass, rules jsonb DEFAULT '{}')
RETURNS TABLE (invoice_id text, transaction_id text, allocated_amount numeric, score numeric,
               grade text, group_id bigint, reasons jsonb)
LANGUAGE sql STABLE
AS $$
    SELECT m.invoice_id, m.transaction_id, m.allocated_amount, m.score, m.grade, m.group_id,
           m.reasons::pg_catalog.jsonb
    FROM tenancy._reconcile(invoices, transactions, tenancy._call_rules(rules)) m
$$;
COMMENT ON FUNCTION tenancy.reconcile(regclass, regclass, jsonb) IS 'Candidate matches between invoices (id, amount, currency, issue_date, due_date, reference, counterparty, open_amount) and bank transactions (id, amount, currency, booked_on, description, counterparty; unmatched_amount if present) of the current tenant, read as the caller, with score, grade (auto | suggested), group and reasons. rules overrides the tenant''s rules for this call.';

CREATE OR REPLACE FUNCTION tenancy.explain_reasons(reasons jsonb)
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

-- Progress of running calls, for DBAs (shared memory: the library is
-- preloaded, so a restart after installing it is needed anyway).
CREATE FUNCTION tenancy._reconcile_progress() RETURNS TABLE (
    "pid" integer,
    "tenant_id" uuid,
    "phase" text,
    "started_at" timestamptz,
    "invoices_read" bigint,
    "transactions_read" bigint,
    "matches" bigint,
    "windows" bigint
)
STRICT VOLATILE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'running_wrapper';
REVOKE ALL ON FUNCTION tenancy._reconcile_progress() FROM PUBLIC;

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
REVOKE ALL ON tenancy.reconcile_progress FROM PUBLIC;
GRANT SELECT ON tenancy.reconcile_progress TO pg_monitor;
GRANT EXECUTE ON FUNCTION tenancy._reconcile_progress() TO pg_monitor;

-- ---------------------------------------------------------------------------
-- 3. The HTTP hot path: pre_request's work in Rust, with a cache that is
--    exact.
--
-- Why: every HTTP request runs tenancy.pre_request(). In 0.4.0 it parsed the
-- claims as jsonb, ran a query joining tenants, members and permissions and a
-- second PL/pgSQL function for the rate limit: about 20% of PostgREST's
-- throughput. Now tenancy._pre_request() (Rust) does the same checks and
-- keeps, per backend, what it looked up for each (tenant, user); statement
-- triggers on tenants, roles, role_permissions, user_roles and rate_limits
-- queue a relcache invalidation with every change, which drops those caches
-- in every backend as the change commits. So a revoked role, a removed
-- member or a suspended tenant is refused on the next request, as before.
-- The rate-limit counters hold tenancy.rate_limit_keys keys (a server
-- setting, default 262,144, was 16,384 fixed) and never refuse a request
-- for want of room: a full table recycles the window nearest its end, so
-- RATE_LIMIT_UNAVAILABLE (TN031) is no longer raised.
-- ---------------------------------------------------------------------------

CREATE FUNCTION tenancy."_pre_request"() RETURNS TEXT
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'pre_request_wrapper';
REVOKE ALL ON FUNCTION tenancy._pre_request() FROM PUBLIC;

CREATE FUNCTION tenancy._request_changed() RETURNS trigger
LANGUAGE c
AS 'MODULE_PATHNAME', '_request_changed_wrapper';
REVOKE ALL ON FUNCTION tenancy._request_changed() FROM PUBLIC;

-- What tenancy._pre_request() (src/request.rs) looks up for a request of
-- user `sub` in tenant `tenant`, when its per-backend cache does not have it:
-- no row if there is no such tenant.
CREATE FUNCTION tenancy._request_facts(tenant uuid, sub uuid)
RETURNS TABLE (active boolean, member boolean, grants text[], requests integer, window_seconds integer,
               per_user boolean)
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT t.status = 'active',
           EXISTS (SELECT 1 FROM tenancy.user_roles ur WHERE ur.tenant_id = t.id AND ur.user_id = sub),
           coalesce((SELECT array_agg(rp.resource || '.' || rp.action)
                     FROM tenancy.user_roles ur
                     JOIN tenancy.role_permissions rp ON rp.tenant_id = ur.tenant_id AND rp.role = ur.role
                     WHERE ur.tenant_id = t.id AND ur.user_id = sub), '{}'),
           rl.requests, rl.window_seconds, rl.per_user
    FROM tenancy.tenants t
    LEFT JOIN tenancy.rate_limits rl ON rl.tenant_id = t.id
    WHERE t.id = tenant
$$;
REVOKE ALL ON FUNCTION tenancy._request_facts(uuid, uuid) FROM PUBLIC;

-- PostgREST's db-pre-request: validates the verified JWT claims, sets the
-- tenant and user for this request's transaction and counts the request
-- against the tenant's rate limit, all in tenancy._pre_request()
-- (src/request.rs). PostgREST has already checked the signature and exp;
-- this checks what only the database knows. A refusal is raised here, with
-- the error catalog's code and HTTP status.
CREATE OR REPLACE FUNCTION tenancy.pre_request()
RETURNS void
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    refusal text := tenancy._pre_request();
    r jsonb;
BEGIN
    IF refusal IS NOT NULL THEN
        r := refusal::jsonb;
        PERFORM tenancy.raise_error(r ->> 'code', r ->> 'message', r ->> 'hint', NULL, r -> 'headers');
    END IF;
END
$$;
COMMENT ON FUNCTION tenancy.pre_request() IS 'PostgREST db-pre-request: validates request.jwt.claims (type, tenant_id, sub, tenant status, membership), sets the tenant and user for this request only, and counts the request against the tenant''s rate limit (429 over budget).';

DROP FUNCTION tenancy._rate_limit(uuid, uuid, integer, integer, boolean);

-- What tenancy._pre_request() keeps per backend is dropped in every backend
-- as soon as a change to these tables commits (the trigger queues a relcache
-- invalidation of the table, which Postgres delivers with the commit).
CREATE TRIGGER request_cache AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.tenants
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy._request_changed();
CREATE TRIGGER request_cache AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.roles
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy._request_changed();
CREATE TRIGGER request_cache AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.role_permissions
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy._request_changed();
CREATE TRIGGER request_cache AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.user_roles
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy._request_changed();

-- The budgets are read by tenancy._pre_request(): a change drops what
-- backends keep of them (see context.sql).
CREATE TRIGGER request_cache AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.rate_limits
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy._request_changed();
