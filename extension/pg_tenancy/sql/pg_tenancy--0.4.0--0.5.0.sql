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
-- are read (a partial index with the reader's predicate serves it), through
-- cursors, and open sets larger than the setting
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

CREATE FUNCTION tenancy._changed() RETURNS trigger
LANGUAGE c
AS 'MODULE_PATHNAME', '_changed_wrapper';
REVOKE ALL ON FUNCTION tenancy._changed() FROM PUBLIC;

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
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy._changed();
CREATE TRIGGER request_cache AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.roles
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy._changed();
CREATE TRIGGER request_cache AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.role_permissions
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy._changed();
CREATE TRIGGER request_cache AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.user_roles
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy._changed();

-- The budgets are read by tenancy._pre_request(): a change drops what
-- backends keep of them (see context.sql).
CREATE TRIGGER request_cache AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.rate_limits
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy._changed();

-- ---------------------------------------------------------------------------
-- 4. Database logins bound to their tenants.
--
-- Why: in 0.4.0 any login that could call set_tenant entered every tenant,
-- and SQL sessions ran without RBAC. A customer's analyst or BI tool needs a
-- login that sees its own tenant only, with the rights of an RBAC role of it.
-- tenancy.grant_sql_access(login, tenant, role) binds a login; a login bound
-- to one tenant is in it without set_tenant, and RBAC applies to it. Entering
-- every tenant becomes a privilege granted to roles on purpose
-- (tenancy.grant_all_tenants); so that nothing that worked stops working,
-- every role that was granted set_tenant or _job_context gets it here, and
-- tenancy.check() lists the logins that have it.
-- ---------------------------------------------------------------------------

-- Audit entries of bound logins name the RBAC role they acted as. Added
-- last, as a fresh install has it.
ALTER TABLE tenancy.audit_log ADD COLUMN acting_as text;
COMMENT ON COLUMN tenancy.audit_log.acting_as IS 'For a database login bound to the tenant (tenancy.grant_sql_access): the RBAC role it acted as; db_user names the login.';

CREATE FUNCTION tenancy."_acting_as"() RETURNS TEXT
STRICT STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'acting_as_wrapper';

-- The audit trigger. Arguments: the tenant column, then the primary key
-- columns. Runs as the extension's owner (it writes the log no caller may
-- write); the actor comes from the context, the login from session_user.
CREATE OR REPLACE FUNCTION tenancy._audit()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tenant_col text := TG_ARGV[0];
    keys text[] := TG_ARGV[1:TG_NARGS - 1];
    headers text := nullif(current_setting('request.headers', true), '');
    request_id text;
    key_new text;
    key_old text;
    same_key text;
    cols constant text := 'tenant_id, actor, request_id, request_path, action, table_name, row_key, old_values, new_values, acting_as';
    acting text := tenancy._acting_as();
BEGIN
    IF headers IS NOT NULL THEN
        request_id := left(headers::jsonb ->> 'x-request-id', 200);
    END IF;
    SELECT 'jsonb_build_object(' || string_agg(format('%L, n.%I', k, k), ', ') || ')',
           'jsonb_build_object(' || string_agg(format('%L, o.%I', k, k), ', ') || ')',
           string_agg(format('o.%I = n.%I', k, k), ' AND ')
    INTO key_new, key_old, same_key
    FROM unnest(keys) k;

    IF TG_OP = 'INSERT' THEN
        EXECUTE format('INSERT INTO tenancy.audit_log (%s)
            SELECT n.%I, $1, $2, $3, ''INSERT'', $4, %s, NULL, to_jsonb(n), $5 FROM new_rows n', cols, tenant_col, key_new)
        USING tenancy.current_user_id(), request_id, current_setting('request.path', true), TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME,
              acting;
    ELSIF TG_OP = 'DELETE' THEN
        EXECUTE format('INSERT INTO tenancy.audit_log (%s)
            SELECT o.%I, $1, $2, $3, ''DELETE'', $4, %s, to_jsonb(o), NULL, $5 FROM old_rows o', cols, tenant_col, key_old)
        USING tenancy.current_user_id(), request_id, current_setting('request.path', true), TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME,
              acting;
    ELSE
        -- Old and new versions are paired by primary key; a row whose key
        -- changed appears unpaired, with its whole old or new version.
        EXECUTE format('INSERT INTO tenancy.audit_log (%1$s)
            SELECT coalesce(n.%2$I, o.%2$I), $1, $2, $3, ''UPDATE'', $4,
                   CASE WHEN n.%3$I IS NULL THEN %4$s ELSE %5$s END, d.old_values, d.new_values, $5
            FROM old_rows o FULL JOIN new_rows n ON %6$s
            CROSS JOIN LATERAL (
                SELECT coalesce(jsonb_object_agg(x.key, x.value) FILTER (WHERE x.key IS NOT NULL), ''{}'') AS old_values,
                       coalesce(jsonb_object_agg(y.key, y.value) FILTER (WHERE y.key IS NOT NULL), ''{}'') AS new_values
                FROM jsonb_each(to_jsonb(o)) x FULL JOIN jsonb_each(to_jsonb(n)) y ON x.key = y.key
                WHERE x.value IS DISTINCT FROM y.value) d',
            cols, tenant_col, keys[1], key_old, key_new, same_key)
        USING tenancy.current_user_id(), request_id, current_setting('request.path', true), TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME,
              acting;
    END IF;
    RETURN NULL;
END
$$;

-- Database logins bound to their tenants (src/logins.rs): a customer's
-- analyst, or a BI tool pointed at a customer's data, gets a login that may
-- enter only its tenants, as an RBAC role of each. Entering every tenant is a
-- privilege a DBA grants to a role on purpose (grant_all_tenants), and
-- tenancy.check() lists every login that has it.

-- One row per (login, tenant): the login may enter the tenant, acting as
-- `role` (an RBAC role of that tenant). Logins are kept by name, so a dump
-- restored into another cluster keeps them.
CREATE TABLE tenancy.sql_logins (
    login      name        NOT NULL,
    tenant_id  uuid        NOT NULL REFERENCES tenancy.tenants (id) ON DELETE CASCADE,
    role       text        NOT NULL,
    granted_at timestamptz NOT NULL DEFAULT now(),
    granted_by name        NOT NULL DEFAULT session_user,
    PRIMARY KEY (login, tenant_id),
    FOREIGN KEY (tenant_id, role) REFERENCES tenancy.roles (tenant_id, name) ON DELETE CASCADE
);
COMMENT ON TABLE tenancy.sql_logins IS 'Database logins bound to tenants, each acting as an RBAC role of its tenant. Set with tenancy.grant_sql_access() and tenancy.revoke_sql_access().';
SELECT pg_catalog.pg_extension_config_dump('tenancy.sql_logins', '');

-- Roles whose members (logins included) may enter every tenant from SQL:
-- the platform's own analysts, the scheduled jobs.
CREATE TABLE tenancy.all_tenants (
    role       name        PRIMARY KEY,
    granted_at timestamptz NOT NULL DEFAULT now(),
    granted_by name        NOT NULL DEFAULT session_user
);
COMMENT ON TABLE tenancy.all_tenants IS 'Roles whose members may enter every tenant with tenancy.set_tenant(). Set with tenancy.grant_all_tenants() and tenancy.revoke_all_tenants().';
SELECT pg_catalog.pg_extension_config_dump('tenancy.all_tenants', '');

-- What backends keep of both tables is dropped when a change commits.
CREATE TRIGGER login_cache AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.sql_logins
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy._changed();
CREATE TRIGGER login_cache AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.all_tenants
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy._changed();
-- Binding and unbinding are audited in the tenant's own log.
SELECT tenancy.enable_audit('tenancy.sql_logins');

-- The session's login (session_user, whatever role it has switched to):
-- whether it is a superuser, whether it may enter every tenant, and one row
-- per tenant it is bound to (a suspended one still binds it: it enters
-- nothing else). A login learns only its own bindings.
CREATE FUNCTION tenancy._login_bindings()
RETURNS TABLE (login text, superuser boolean, all_tenants boolean, tenant_id uuid, slug text, role text, active boolean)
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.rolname::text, r.rolsuper,
           EXISTS (SELECT 1 FROM tenancy.all_tenants a JOIN pg_roles g ON g.rolname = a.role
                   WHERE pg_has_role(r.oid, g.oid, 'MEMBER')),
           b.tenant_id, b.slug, b.role, b.status = 'active'
    FROM pg_roles r
    LEFT JOIN (SELECT s.login, s.tenant_id, t.slug, s.role, t.status
               FROM tenancy.sql_logins s JOIN tenancy.tenants t ON t.id = s.tenant_id) b
           ON b.login = r.rolname
    WHERE r.rolname = session_user
    ORDER BY b.slug
$$;

-- The (resource, action) grants of the RBAC role the session's login acts
-- as in `tenant`; none if it is not bound to it.
CREATE FUNCTION tenancy._login_grants(tenant uuid)
RETURNS TABLE (resource text, action text)
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT rp.resource, rp.action
    FROM tenancy.sql_logins s
    JOIN tenancy.role_permissions rp ON rp.tenant_id = s.tenant_id AND rp.role = s.role
    WHERE s.login = session_user AND s.tenant_id = tenant
$$;

-- Binds a login to a tenant, acting as an RBAC role of it (readonly unless
-- said otherwise). Binding it again changes the role.
CREATE FUNCTION tenancy.grant_sql_access(login name, tenant text, role text DEFAULT 'readonly')
RETURNS void
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r pg_roles;
    t tenancy.tenants := tenancy.find_tenant(tenant);
BEGIN
    SELECT * INTO r FROM pg_roles x WHERE x.rolname = grant_sql_access.login;
    IF r.oid IS NULL THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', format('role "%s" does not exist', left(login, 100)),
            'Create the login first: CREATE ROLE ... LOGIN PASSWORD ...;');
    END IF;
    IF r.rolsuper OR r.rolbypassrls THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT',
            format('role "%s" bypasses row level security: binding it to a tenant would protect nothing', login),
            'Bind an ordinary login (NOSUPERUSER NOBYPASSRLS).');
    END IF;
    PERFORM tenancy.tenant_role(t.id, grant_sql_access.role);  -- NOT_FOUND unless it exists
    INSERT INTO tenancy.sql_logins AS s (login, tenant_id, role)
    VALUES (grant_sql_access.login, t.id, grant_sql_access.role)
    ON CONFLICT ON CONSTRAINT sql_logins_pkey DO UPDATE
    SET role = EXCLUDED.role, granted_at = now(), granted_by = session_user
    WHERE s.role IS DISTINCT FROM EXCLUDED.role;
END
$$;
COMMENT ON FUNCTION tenancy.grant_sql_access(name, text, text) IS 'Binds a database login to a tenant, acting as one of its RBAC roles (default readonly): it may then enter that tenant only (and only its bound tenants), and one bound to a single tenant is in it without set_tenant. Audited.';

-- Unbinds a login from a tenant; true if it was bound.
CREATE FUNCTION tenancy.revoke_sql_access(login name, tenant text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t tenancy.tenants := tenancy.find_tenant(tenant);
BEGIN
    DELETE FROM tenancy.sql_logins s WHERE s.login = revoke_sql_access.login AND s.tenant_id = t.id;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION tenancy.revoke_sql_access(name, text) IS 'Unbinds a database login from a tenant; it applies from the login''s next transaction. Audited.';

-- Lets the members of a role enter every tenant from SQL (set_tenant, and
-- the scheduled jobs' for_each_tenant). tenancy.check() lists every login
-- that may.
CREATE FUNCTION tenancy.grant_all_tenants(role name)
RETURNS void
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles x WHERE x.rolname = grant_all_tenants.role) THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', format('role "%s" does not exist', left(role, 100)));
    END IF;
    INSERT INTO tenancy.all_tenants (role) VALUES (grant_all_tenants.role) ON CONFLICT DO NOTHING;
END
$$;
COMMENT ON FUNCTION tenancy.grant_all_tenants(name) IS 'Lets the members of a role enter every tenant from SQL (tenancy.set_tenant, for_each_tenant). Logins bound to tenants stay bound to them.';

CREATE FUNCTION tenancy.revoke_all_tenants(role name)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM tenancy.all_tenants a WHERE a.role = revoke_all_tenants.role;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION tenancy.revoke_all_tenants(name) IS 'Takes back tenancy.grant_all_tenants(); true if the role had it.';

-- Every binding and every all-tenants role, for DBAs.
CREATE VIEW tenancy.sql_access AS
SELECT s.login, t.slug AS tenant, s.tenant_id, s.role, s.granted_at, s.granted_by
FROM tenancy.sql_logins s JOIN tenancy.tenants t ON t.id = s.tenant_id
UNION ALL
SELECT a.role, '*', NULL, NULL, a.granted_at, a.granted_by
FROM tenancy.all_tenants a;
COMMENT ON VIEW tenancy.sql_access IS 'Which database login may enter which tenant, as which RBAC role; tenant * for the roles whose members may enter every tenant.';

CREATE OR REPLACE FUNCTION tenancy.check()
RETURNS TABLE (severity text, object_type text, object_name text, problem text, fix text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
WITH ext_objects AS (
    SELECT d.classid, d.objid FROM pg_depend d
    WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
),
user_tables AS (
    SELECT c.oid, c.relname, c.relrowsecurity, c.relforcerowsecurity
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'tenancy')
      AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
      AND NOT EXISTS (SELECT 1 FROM ext_objects e WHERE e.classid = 'pg_class'::regclass AND e.objid = c.oid)
),
-- A table is tenant-scoped when a column references tenancy.tenants, or
-- when it has a column named tenant_id (then it is a table someone forgot).
scoped AS (
    SELECT t.*, a.attname AS col, true AS has_fk
    FROM user_tables t
    JOIN pg_constraint k ON k.conrelid = t.oid AND k.contype = 'f'
                        AND k.confrelid = 'tenancy.tenants'::regclass AND array_length(k.conkey, 1) = 1
    JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.conkey[1]
    UNION
    SELECT t.*, a.attname, false
    FROM user_tables t
    JOIN pg_attribute a ON a.attrelid = t.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
    WHERE NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = t.oid AND k.contype = 'f'
                      AND k.confrelid = 'tenancy.tenants'::regclass)
),
-- Views that read a tenant-scoped table, directly or through other views.
dependent_views AS (
    WITH RECURSIVE v(oid) AS (
        SELECT DISTINCT r.ev_class
        FROM pg_rewrite r JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
        WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid IN (SELECT oid FROM scoped)
          AND r.ev_class NOT IN (SELECT oid FROM scoped)
        UNION
        SELECT r.ev_class
        FROM pg_rewrite r JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
        JOIN v ON d.refclassid = 'pg_class'::regclass AND d.refobjid = v.oid
        WHERE r.ev_class <> v.oid
    )
    SELECT c.oid FROM v JOIN pg_class c ON c.oid = v.oid
    WHERE c.relkind IN ('v', 'm')
      AND NOT EXISTS (SELECT 1 FROM ext_objects e WHERE e.classid = 'pg_class'::regclass AND e.objid = c.oid)
)
SELECT 'error', 'table', s.oid::regclass::text,
       format('has a %I column but is not tenant-scoped (no foreign key to tenancy.tenants)', s.col),
       format('SELECT tenancy.enable(%L);', s.oid::regclass::text)
FROM scoped s WHERE NOT s.has_fk
UNION ALL
SELECT 'error', 'table', s.oid::regclass::text,
       'row level security is not enabled: every tenant sees every row',
       format('SELECT tenancy.enable(%L);', s.oid::regclass::text)
FROM scoped s WHERE s.has_fk AND NOT s.relrowsecurity
UNION ALL
SELECT 'error', 'table', s.oid::regclass::text,
       'row level security is not forced: the table owner bypasses tenant isolation',
       format('ALTER TABLE %s FORCE ROW LEVEL SECURITY;', s.oid::regclass::text)
FROM scoped s WHERE s.has_fk AND NOT s.relforcerowsecurity
UNION ALL
SELECT 'error', 'table', s.oid::regclass::text,
       'has no tenant_isolation policy',
       format('SELECT tenancy.enable(%L, %L);', s.oid::regclass::text, s.col)
FROM scoped s
WHERE s.has_fk AND NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = s.oid AND p.polname = 'tenant_isolation')
UNION ALL
SELECT 'warning', 'table', s.oid::regclass::text,
       format('no index leads with %I: every tenant''s query scans the whole table', s.col),
       format('CREATE INDEX ON %s (%I);', s.oid::regclass::text, s.col)
FROM scoped s
WHERE s.has_fk AND NOT EXISTS (
    SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
    WHERE i.indrelid = s.oid AND a.attname = s.col)
UNION ALL
SELECT 'error', 'view', c.oid::regclass::text,
       'reads a tenant-scoped table with its owner''s rights (no security_invoker), so isolation does not apply to callers',
       format('ALTER VIEW %s SET (security_invoker = true);', c.oid::regclass::text)
FROM dependent_views dv JOIN pg_class c ON c.oid = dv.oid
WHERE c.relkind = 'v'
  AND NOT coalesce((SELECT o.option_value::boolean FROM pg_options_to_table(c.reloptions) o
                    WHERE o.option_name = 'security_invoker'), false)
UNION ALL
SELECT 'error', 'materialized view', c.oid::regclass::text,
       'stores rows of a tenant-scoped table without row level security',
       format('DROP MATERIALIZED VIEW %s; -- or keep it out of reach of API roles', c.oid::regclass::text)
FROM dependent_views dv JOIN pg_class c ON c.oid = dv.oid
WHERE c.relkind = 'm'
UNION ALL
SELECT 'error', 'function', p.oid::regprocedure::text,
       'SECURITY DEFINER without a pinned search_path: a caller can hijack the objects it resolves',
       format('ALTER FUNCTION %s SET search_path = pg_catalog, pg_temp;', p.oid::regprocedure::text)
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE p.prosecdef
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND NOT EXISTS (SELECT 1 FROM unnest(coalesce(p.proconfig, '{}')) cfg WHERE cfg LIKE 'search\_path=%')
UNION ALL
SELECT 'error', 'role', r.rolname::text,
       'login role with BYPASSRLS: anything connecting as it ignores tenant isolation',
       format('ALTER ROLE %I NOBYPASSRLS;', r.rolname)
FROM pg_roles r WHERE r.rolcanlogin AND r.rolbypassrls AND NOT r.rolsuper
UNION ALL
SELECT 'error', 'role', l.rolname::text,
       format('login role can switch to role %I, which bypasses row level security (PostgREST could use it)', b.rolname),
       format('REVOKE %I FROM %I;', b.rolname, l.rolname)
FROM pg_roles l JOIN pg_roles b ON b.oid <> l.oid AND (b.rolbypassrls OR b.rolsuper)
WHERE l.rolcanlogin AND NOT l.rolsuper AND NOT l.rolbypassrls
  AND pg_has_role(l.oid, b.oid, 'MEMBER')
UNION ALL
-- Not unsafe in itself, but never to be had by accident: every login (but
-- superusers) that may enter every tenant from SQL.
SELECT 'notice', 'role', l.rolname::text,
       format('login may enter every tenant (a member of %s, granted with tenancy.grant_all_tenants)', string_agg(quote_ident(a.role), ', ' ORDER BY a.role)),
       format('SELECT tenancy.revoke_all_tenants(%L); -- if that is not meant; or bind the login to its tenants with tenancy.grant_sql_access()', min(a.role))
FROM pg_roles l
JOIN tenancy.all_tenants a ON true
JOIN pg_roles g ON g.rolname = a.role
WHERE l.rolcanlogin AND NOT l.rolsuper AND pg_has_role(l.oid, g.oid, 'MEMBER')
  AND NOT EXISTS (SELECT 1 FROM tenancy.sql_logins s WHERE s.login = l.rolname)
GROUP BY l.rolname
UNION ALL
-- Bindings are kept by role name (so that a dump keeps them), and DROP ROLE
-- leaves them behind: a new role of the same name would have them.
SELECT 'error', 'role', s.login::text,
       format('bound to tenant "%s", but no role of that name exists: a role created with it would enter the tenant', t.slug),
       format('SELECT tenancy.revoke_sql_access(%L, %L);', s.login, t.slug)
FROM tenancy.sql_logins s JOIN tenancy.tenants t ON t.id = s.tenant_id
WHERE NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = s.login)
UNION ALL
SELECT 'error', 'role', a.role::text,
       'may enter every tenant, but no role of that name exists: a role created with it would',
       format('SELECT tenancy.revoke_all_tenants(%L);', a.role)
FROM tenancy.all_tenants a
WHERE NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = a.role)
ORDER BY 1, 2, 3, 4
$$;
COMMENT ON FUNCTION tenancy.check() IS 'Lists what is unsafe (errors, warnings): tenant-scoped tables missing RLS, FORCE, policy or index; views without security_invoker over them; SECURITY DEFINER functions without a pinned search_path; login roles that can bypass RLS; bindings of roles that no longer exist. And, as notices, every login that may enter every tenant.';

REVOKE ALL ON FUNCTION tenancy.grant_sql_access(name, text, text), tenancy.revoke_sql_access(name, text),
    tenancy.grant_all_tenants(name), tenancy.revoke_all_tenants(name) FROM PUBLIC;
REVOKE ALL ON tenancy.sql_logins, tenancy.all_tenants, tenancy.sql_access FROM PUBLIC;
REVOKE ALL ON FUNCTION tenancy._login_bindings(), tenancy._login_grants(uuid), tenancy._acting_as() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy._login_bindings(), tenancy._login_grants(uuid), tenancy._acting_as() TO PUBLIC;

-- Roles a DBA granted set_tenant or _job_context to (the reference
-- deployment's analyst and tenancy_jobs) keep entering every tenant.
INSERT INTO tenancy.all_tenants (role)
SELECT DISTINCT r.rolname
FROM pg_catalog.pg_proc p
CROSS JOIN LATERAL pg_catalog.aclexplode(p.proacl) x
JOIN pg_catalog.pg_roles r ON r.oid = x.grantee
WHERE p.oid IN ('tenancy.set_tenant(text)'::regprocedure, 'tenancy._job_context(uuid)'::regprocedure)
  AND x.privilege_type = 'EXECUTE' AND NOT r.rolsuper
ON CONFLICT DO NOTHING;
