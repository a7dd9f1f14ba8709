-- pg_tenancy 0.5.0 -> 0.6.0
--
-- 1. The HTTP hot path: pre_request without SECURITY DEFINER, inlined.
--
-- Why: every HTTP request runs tenancy.pre_request(). In 0.5.0 it was a
-- PL/pgSQL SECURITY DEFINER function with a SET search_path clause around
-- the Rust hook: the user switch, the setting of search_path and its undoing
-- (which makes Postgres look up the schemas of the search path again), and
-- PL/pgSQL itself cost more than the hook's own work. Now pre_request is a
-- plain SQL function that Postgres inlines into PostgREST's statement; it
-- runs as its caller. The one read the hook needs that the API role may not
-- do (tenancy._request_facts: any tenant's status and members, on a cache
-- miss) switches user inside the hook for that call alone (src/request.rs).
-- A refusal is raised by tenancy._raise_refusal(), which is STRICT: a
-- request that goes ahead never enters PL/pgSQL.
--
-- As pre_request runs as its caller, a role that may run it must also be
-- granted EXECUTE on tenancy._pre_request(): every role granted pre_request
-- gets that grant here, and tenancy.check() reports a role that has one of
-- the two without the other.
-- ---------------------------------------------------------------------------

CREATE FUNCTION tenancy._raise_refusal(refusal text)
RETURNS void
LANGUAGE plpgsql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r constant jsonb := refusal::jsonb;
BEGIN
    PERFORM tenancy.raise_error(r ->> 'code', r ->> 'message', r ->> 'hint', NULL, r -> 'headers');
END
$$;
REVOKE ALL ON FUNCTION tenancy._raise_refusal(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy._raise_refusal(text) TO PUBLIC;

CREATE OR REPLACE FUNCTION tenancy.pre_request()
RETURNS void
LANGUAGE sql VOLATILE
AS $$ SELECT tenancy._raise_refusal(tenancy._pre_request()) $$;


DO $$
DECLARE
    g record;
BEGIN
    FOR g IN
        SELECT DISTINCT a.grantee
        FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
        WHERE p.oid = 'tenancy.pre_request()'::pg_catalog.regprocedure AND a.privilege_type = 'EXECUTE'
    LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION tenancy._pre_request() TO %s',
            CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE g.grantee::pg_catalog.regrole::text END);
    END LOOP;
END
$$;

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
-- tenancy.pre_request() runs as its caller and calls tenancy._pre_request():
-- a role needs EXECUTE on both, or on neither.
SELECT CASE WHEN x.hook THEN 'error' ELSE 'warning' END, 'role', x.rolname::text,
       CASE WHEN x.hook
            THEN 'may run tenancy.pre_request() but not tenancy._pre_request(): every request it makes is refused (permission denied)'
            ELSE 'may run tenancy._pre_request() but not tenancy.pre_request(): it can set a tenant and user from claims it writes itself' END,
       CASE WHEN x.hook
            THEN format('GRANT EXECUTE ON FUNCTION tenancy._pre_request() TO %I;', x.rolname)
            ELSE format('REVOKE EXECUTE ON FUNCTION tenancy._pre_request() FROM %I;', x.rolname) END
FROM (SELECT r.rolname,
             has_function_privilege(r.oid, 'tenancy.pre_request()', 'EXECUTE') AS hook,
             has_function_privilege(r.oid, 'tenancy._pre_request()', 'EXECUTE') AS inner_hook
      FROM pg_roles r WHERE NOT r.rolsuper) x
WHERE x.hook <> x.inner_hook
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
COMMENT ON FUNCTION tenancy.check() IS 'Lists what is unsafe (errors, warnings): tenant-scoped tables missing RLS, FORCE, policy or index; views without security_invoker over them; SECURITY DEFINER functions without a pinned search_path; login roles that can bypass RLS; roles that may run pre_request but not _pre_request (or the reverse); bindings of roles that no longer exist. And, as notices, every login that may enter every tenant.';

-- ---------------------------------------------------------------------------
-- 2. Policies write out the bodies of tenant_scope() and permits().
--
-- Why: PostgREST plans most requests afresh (their LIMIT is a parameter, so
-- Postgres chooses custom plans), and inlining a SQL function in a policy
-- parses the function's body again at every planning: a third of what
-- planning GET /invoices cost. The expressions are the same; only their
-- spelling changes. New policies (enable, protect) are written the new way;
-- the policies enable, protect and the audit log created before are
-- rewritten here.
-- ---------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION tenancy.enable(tbl regclass, col name DEFAULT 'tenant_id')
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel record;
    att record;
    fk_name name := tenancy.scoped_object_name(tbl, col, 'tenant_fk');
    idx_name name := tenancy.scoped_object_name(tbl, col, 'tenant_idx');
    -- tenant_scope()'s body, written out: see context.sql.
    scope constant text := format('%I = (SELECT coalesce(tenancy.current_tenant_id(), tenancy.tenant_context_required()))', col);
BEGIN
    IF tbl IS NULL OR col IS NULL THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', 'tenancy.enable needs a table and a column name');
    END IF;
    SELECT c.relkind, n.nspname INTO rel
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = tbl;
    IF rel.relkind NOT IN ('r', 'p') THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', format('%s is not a table', tbl),
            'Enable the underlying table; give views security_invoker = true so its policies apply.');
    END IF;
    IF rel.nspname = 'tenancy' THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', format('%s belongs to the extension itself', tbl));
    END IF;

    SELECT a.attnum, a.atttypid INTO att
    FROM pg_attribute a WHERE a.attrelid = tbl AND a.attname = col AND NOT a.attisdropped;
    IF att.attnum IS NULL THEN
        -- Adopting an existing table: its rows go to the tenant set with set_tenant.
        BEGIN
            EXECUTE format('ALTER TABLE %s ADD COLUMN %I uuid NOT NULL DEFAULT tenancy.current_tenant_id()', tbl, col);
        EXCEPTION WHEN not_null_violation THEN
            PERFORM tenancy.raise_error('INVALID_ARGUMENT',
                format('%s has rows but no tenant is set to own them', tbl),
                format('Adopt them into one tenant: BEGIN; SELECT tenancy.set_tenant(''<slug>''); SELECT tenancy.enable(%L); COMMIT;', tbl::text));
        END;
    ELSIF att.atttypid <> 'uuid'::regtype THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT',
            format('column %I of %s is %s, but a tenant column must be uuid', col, tbl, format_type(att.atttypid, NULL)));
    ELSE
        EXECUTE format('ALTER TABLE %s ALTER COLUMN %I SET DEFAULT tenancy.current_tenant_id()', tbl, col);
        BEGIN
            EXECUTE format('ALTER TABLE %s ALTER COLUMN %I SET NOT NULL', tbl, col);
        EXCEPTION WHEN not_null_violation THEN
            PERFORM tenancy.raise_error('INVALID_ARGUMENT',
                format('column %I of %s has NULLs; every row needs a tenant', col, tbl));
        END;
    END IF;

    -- Deleting a tenant cascades into this table.
    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint k
        JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]
        WHERE k.conrelid = tbl AND k.contype = 'f' AND k.confrelid = 'tenancy.tenants'::regclass
          AND array_length(k.conkey, 1) = 1 AND a.attname = col AND k.confdeltype = 'c'
    ) THEN
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I FOREIGN KEY (%I) REFERENCES tenancy.tenants (id) ON DELETE CASCADE',
                       tbl, fk_name, col);
    END IF;

    -- Every tenant's query filters on the tenant column: an index must lead with it.
    IF NOT EXISTS (
        SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
        WHERE i.indrelid = tbl AND a.attname = col
    ) THEN
        EXECUTE format('CREATE INDEX %I ON %s (%I)', idx_name, tbl, col);
    END IF;

    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', tbl);
    -- The policy is recreated, not skipped, so a changed tenant column is picked up.
    IF EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = tbl AND p.polname = 'tenant_isolation') THEN
        EXECUTE format('DROP POLICY tenant_isolation ON %s', tbl);
    END IF;
    EXECUTE format('CREATE POLICY tenant_isolation ON %s AS PERMISSIVE FOR ALL TO PUBLIC USING (%s) WITH CHECK (%s)',
                   tbl, scope, scope);
    EXECUTE format('COMMENT ON POLICY tenant_isolation ON %s IS %L', tbl,
                   'pg_tenancy: rows of the current tenant only (tenancy.enable)');
END
$$;

CREATE OR REPLACE FUNCTION tenancy.protect(tbl regclass, resource text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cmd record;
    check_expr text;
BEGIN
    IF tbl IS NULL OR resource IS NULL OR resource !~ '^[a-z][a-z0-9_]{0,62}$' THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT',
            format('invalid resource name %s', coalesce(quote_literal(left(resource, 100)), 'NULL')),
            'A resource name is 1 to 63 characters: lowercase letters, digits and "_", starting with a letter.');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = tbl AND p.polname = 'tenant_isolation') THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', format('%s is not tenant-scoped', tbl),
            format('Run SELECT tenancy.enable(%L); first: RBAC policies narrow tenant isolation, they do not replace it.', tbl::text));
    END IF;

    INSERT INTO tenancy.resources (name, actions) VALUES (resource, ARRAY['create', 'delete', 'read', 'update'])
    ON CONFLICT (name) DO UPDATE SET actions = (
        SELECT array_agg(DISTINCT a ORDER BY a) FROM unnest(tenancy.resources.actions || EXCLUDED.actions) a);
    PERFORM tenancy._rbac_changed();

    FOR cmd IN SELECT * FROM (VALUES ('SELECT', 'read'), ('INSERT', 'create'), ('UPDATE', 'update'), ('DELETE', 'delete'))
               AS v(command, action) LOOP
        -- permits()'s body, written out, as tenant_scope()'s is (context.sql).
        check_expr := format('(SELECT tenancy._permitted(%1$L, %2$L) OR tenancy.permission_denied(%1$L, %2$L))', resource, cmd.action);
        IF EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = tbl AND p.polname = 'rbac_' || cmd.action) THEN
            EXECUTE format('DROP POLICY %I ON %s', 'rbac_' || cmd.action, tbl);
        END IF;
        EXECUTE format('CREATE POLICY %I ON %s AS RESTRICTIVE FOR %s TO PUBLIC %s', 'rbac_' || cmd.action, tbl, cmd.command,
            CASE cmd.command
                WHEN 'INSERT' THEN format('WITH CHECK (%s)', check_expr)
                WHEN 'UPDATE' THEN format('USING (%s) WITH CHECK (%s)', check_expr, check_expr)
                ELSE format('USING (%s)', check_expr)
            END);
    END LOOP;

    EXECUTE format('DROP TRIGGER IF EXISTS tenancy_rbac ON %s', tbl);
    EXECUTE format('CREATE TRIGGER tenancy_rbac BEFORE INSERT OR UPDATE OR DELETE ON %s
                    FOR EACH STATEMENT EXECUTE FUNCTION tenancy.rbac_statement_guard(%L)', tbl, resource);
END
$$;

DO $$
DECLARE
    p record;
    old_scope constant text := '( SELECT tenancy.tenant_scope() AS tenant_scope)';
    new_scope constant text := '(SELECT coalesce(tenancy.current_tenant_id(), tenancy.tenant_context_required()))';
    -- permits(r, a) as pg_get_expr prints it, and its body.
    old_permits constant text := '\( SELECT tenancy\.permits\(((?:''[^'']*'')+::text), ((?:''[^'']*'')+::text)\) AS permits\)';
    new_permits constant text := '(SELECT tenancy._permitted(\1, \2) OR tenancy.permission_denied(\1, \2))';
    q text;
    w text;
    -- pg_get_expr leaves out the schema of what the search path shows, and
    -- an extension script runs with the extension's schema in it.
    saved constant text := pg_catalog.current_setting('search_path');
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog', true);
    FOR p IN
        SELECT c.oid::pg_catalog.regclass AS tbl, pol.polname,
               pg_catalog.pg_get_expr(pol.polqual, pol.polrelid) AS qual,
               pg_catalog.pg_get_expr(pol.polwithcheck, pol.polrelid) AS with_check
        FROM pg_catalog.pg_policy pol JOIN pg_catalog.pg_class c ON c.oid = pol.polrelid
        WHERE pol.polname IN ('tenant_isolation', 'rbac_read', 'rbac_create', 'rbac_update', 'rbac_delete', 'audit_read')
    LOOP
        q := pg_catalog.regexp_replace(pg_catalog.replace(p.qual, old_scope, new_scope), old_permits, new_permits, 'g');
        w := pg_catalog.regexp_replace(pg_catalog.replace(p.with_check, old_scope, new_scope), old_permits, new_permits, 'g');
        IF q IS DISTINCT FROM p.qual THEN
            EXECUTE pg_catalog.format('ALTER POLICY %I ON %s USING (%s)', p.polname, p.tbl, q);
        END IF;
        IF w IS DISTINCT FROM p.with_check THEN
            EXECUTE pg_catalog.format('ALTER POLICY %I ON %s WITH CHECK (%s)', p.polname, p.tbl, w);
        END IF;
    END LOOP;
    PERFORM pg_catalog.set_config('search_path', saved, true);
END
$$;

COMMENT ON FUNCTION tenancy.tenant_scope() IS 'The current tenant, or error TENANT_CONTEXT_REQUIRED (SQLSTATE TN001). Isolation policies check the same, written out.';
COMMENT ON FUNCTION tenancy.permits(text, text) IS 'True if the current user holds resource.action, else PERMISSION_DENIED; protect()''s policies check the same, written out. Names are not re-validated.';
