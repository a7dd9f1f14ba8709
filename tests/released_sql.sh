#!/usr/bin/env bash
# Upgrades are a feature: released SQL never changes, and every released
# version upgrades to the current one with the same result as a fresh install.
#   - extension/pg_tenancy/released/pg_tenancy--V.sql is the SQL of release V,
#     frozen. If V is the current version, the installed (generated) SQL must
#     equal it, comments aside: change the version instead of released SQL.
#   - For each older V: CREATE EXTENSION pg_tenancy VERSION 'V', add data,
#     ALTER EXTENSION pg_tenancy UPDATE (through the upgrade scripts in
#     extension/pg_tenancy/sql/), and compare the schema with a fresh install.
# Usage: tests/released_sql.sh PORT   (a running cluster with pg_tenancy installed)
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
PORT=$1
fail() { printf 'released SQL test FAILED: %s\n' "$*" >&2; exit 1; }
ext_dir=$("$PG_CONFIG" --sharedir)/extension
current=$(sed -n "s/^default_version = '\(.*\)'$/\1/p" "$ext_dir/pg_tenancy.control")
[ -n "$current" ] || fail "no default_version in the installed control file"
# Comments aside (pgrx's /* ... */ name the Rust type of each argument and
# column, which may change while the SQL does not), and in any order: pgrx
# orders items by a dependency graph, not by a stable rule, so the same
# content may come out in another order.
strip() { sed -e 's:/\*[^*]*\*/::g' -e 's/[[:space:]]*$//' "$1" | grep -v -e '^--' -e '^$' | sort; }

checked=0 upgraded=0
for frozen in "$ROOT"/extension/pg_tenancy/released/pg_tenancy--*.sql; do
    [ -e "$frozen" ] || continue
    v=$(basename "$frozen" .sql); v=${v#pg_tenancy--}
    if [ "$v" = "$current" ]; then
        diff <(strip "$frozen") <(strip "$ext_dir/pg_tenancy--$current.sql") >/dev/null ||
            fail "the SQL of released version $v changed; bump the version and add an upgrade script instead"
        checked=$((checked + 1))
        continue
    fi
    cp "$frozen" "$ext_dir/"
    for db in upgrade_from_old upgrade_fresh; do
        psql_admin "$PORT" postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
    done
    # A role a DBA let enter tenants with set_tenant before logins were bound
    # (0.5.0) keeps entering every tenant after the upgrade. It may run the
    # request hook as releases before 0.6.0 asked (pre_request only) or as
    # 0.6.0 on asks (pre_request and _pre_request).
    hook="tenancy.pre_request()"
    if [ "$(printf '%s\n' "$v" 0.6.0 | sort -V | head -n 1)" = 0.6.0 ]; then
        hook="tenancy.pre_request(), tenancy._pre_request()"
    fi
    psql_admin "$PORT" upgrade_from_old -c "CREATE EXTENSION pg_tenancy VERSION '$v'" \
        -c "SELECT tenancy.create_tenant('upgrade-test', 'Upgrade test')" \
        -c "DO \$\$ BEGIN CREATE ROLE upgrade_analyst NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END \$\$" \
        -c "GRANT EXECUTE ON FUNCTION tenancy.set_tenant(text) TO upgrade_analyst" \
        -c "GRANT EXECUTE ON FUNCTION $hook TO upgrade_analyst" \
        -c "CREATE TABLE public.upgrade_items (id int, tenant_id uuid)" \
        -c "SELECT tenancy.enable('public.upgrade_items'), tenancy.protect('public.upgrade_items', 'upgrade_items')" \
        -c "ALTER EXTENSION pg_tenancy UPDATE" >/dev/null || fail "upgrading from $v failed"
    # pre_request runs as its caller since 0.6.0: who could run it can still.
    [ "$(psql_admin "$PORT" upgrade_from_old -At -c "SELECT has_function_privilege('upgrade_analyst', 'tenancy._pre_request()', 'EXECUTE')")" = t ] ||
        fail "upgrading from $v did not grant tenancy._pre_request() to a role granted pre_request"
    psql_admin "$PORT" upgrade_from_old -c "REVOKE EXECUTE ON FUNCTION tenancy.pre_request(), tenancy._pre_request() FROM upgrade_analyst" >/dev/null
    # (From 0.5.0 on a grant of set_tenant alone enters no tenant: nothing to keep.)
    if [ "$(printf '%s\n' "$v" 0.5.0 | sort -V | head -n 1)" != 0.5.0 ]; then
        [ "$(psql_admin "$PORT" upgrade_from_old -At -c "SELECT string_agg(role, ',') FROM tenancy.all_tenants")" = upgrade_analyst ] ||
            fail "upgrading from $v did not keep upgrade_analyst's set_tenant as tenancy.grant_all_tenants"
    fi
    psql_admin "$PORT" upgrade_from_old -c "REVOKE EXECUTE ON FUNCTION tenancy.set_tenant(text) FROM upgrade_analyst" >/dev/null
    psql_admin "$PORT" upgrade_fresh -c "CREATE EXTENSION pg_tenancy" \
        -c "CREATE TABLE public.upgrade_items (id int, tenant_id uuid)" \
        -c "SELECT tenancy.enable('public.upgrade_items'), tenancy.protect('public.upgrade_items', 'upgrade_items')" >/dev/null
    # pg_dump leaves extension members out, so describe them from the catalogs.
    dump() { psql_admin "$PORT" "$1" -At -v ON_ERROR_STOP=1 <<'SQL'
SELECT 'member', pg_describe_object(d.classid, d.objid, d.objsubid)
  FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
  WHERE e.extname = 'pg_tenancy' AND d.deptype = 'e' ORDER BY 2;
SELECT 'routine', p.oid::regprocedure, pg_get_functiondef(p.oid), p.proacl, obj_description(p.oid, 'pg_proc')
  FROM pg_proc p WHERE p.pronamespace = 'tenancy'::regnamespace ORDER BY p.oid::regprocedure::text;
SELECT 'column', a.attrelid::regclass, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_get_expr(ad.adbin, ad.adrelid)
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
  LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
  WHERE c.relnamespace = 'tenancy'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attrelid::regclass::text, 3;
SELECT 'relation', c.oid::regclass, c.relkind, c.relacl, c.relrowsecurity, c.relforcerowsecurity, obj_description(c.oid, 'pg_class')
  FROM pg_class c WHERE c.relnamespace = 'tenancy'::regnamespace ORDER BY c.oid::regclass::text;
SELECT 'constraint', conrelid::regclass, conname, pg_get_constraintdef(oid)
  FROM pg_constraint WHERE connamespace = 'tenancy'::regnamespace ORDER BY conrelid::regclass::text, 3;
-- The extension's policies, and those enable() and protect() made on a table of the user's.
SELECT 'policy', polrelid::regclass, polname, polcmd, polpermissive, pg_get_expr(polqual, polrelid), pg_get_expr(polwithcheck, polrelid)
  FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
  WHERE c.relnamespace IN ('tenancy'::regnamespace, 'public'::regnamespace) ORDER BY polrelid::regclass::text, 3;
SELECT 'trigger', tgrelid::regclass, tgname, pg_get_triggerdef(t.oid)
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
  WHERE c.relnamespace = 'tenancy'::regnamespace AND NOT t.tgisinternal ORDER BY tgrelid::regclass::text, 3;
SELECT 'config', x.tbl::regclass, x.cond
  FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS x(tbl, cond)
  WHERE e.extname = 'pg_tenancy' ORDER BY x.tbl::regclass::text;
SELECT 'resource', name, actions FROM tenancy.resources ORDER BY name;
SQL
    }
    diff <(dump upgrade_from_old) <(dump upgrade_fresh) >&2 || fail "$v upgraded to $current differs from a fresh install (diff above)"
    rm -f "$ext_dir/pg_tenancy--$v.sql"
    upgraded=$((upgraded + 1))
done
[ "$checked" = 1 ] || [ -n "${ALLOW_UNRELEASED:-}" ] ||
    fail "version $current has no frozen SQL in extension/pg_tenancy/released/ (copy the generated SQL there when you release it)"
echo "ok: released SQL unchanged ($checked), upgrades equal to fresh installs ($upgraded)"
