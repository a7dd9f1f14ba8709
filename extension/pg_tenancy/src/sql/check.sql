-- tenancy.check(): a linter for the whole database. One row per problem;
-- no rows means nothing unsafe was found. Extension-owned objects are
-- skipped (they are reached only through pinned SECURITY DEFINER functions).

CREATE FUNCTION tenancy.check()
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
UNION ALL
-- On Citus (nothing without it): see citus.sql.
SELECT * FROM tenancy._citus_findings()
ORDER BY 1, 2, 3, 4
$$;
COMMENT ON FUNCTION tenancy.check() IS 'Lists what is unsafe (errors, warnings): tenant-scoped tables missing RLS, FORCE, policy or index; views without security_invoker over them; SECURITY DEFINER functions without a pinned search_path; login roles that can bypass RLS; roles that may run pre_request but not _pre_request (or the reverse); bindings of roles that no longer exist; on Citus, tenant-scoped tables not sharded by their tenant column, not colocated, or with policies Citus widened. And, as notices, every login that may enter every tenant.';
