#!/usr/bin/env bash
# A Citus deployment of 0.8.0 (the release before the audit log was
# sharded) upgrades to the current one and keeps its audit trail, and its
# tenants' shards can then move: in a database of its own on the running
# Citus cluster, release
# 0.8.0 is scaled out, writes land on both workers (0.8.0 kept their audit
# entries in each worker's own log, named by shard, recorded reference
# table changes once per node, and an INSERT for every row it copied into
# the shards), then ALTER EXTENSION pg_tenancy UPDATE and
# scale_out() again: every entry is read through the coordinator, named by
# its table, each change once, and later entries sort after earlier ones.
# Usage: tests/citus_upgrade.sh COORDINATOR_PORT   (workers on the next two)
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
PORT=$1
DB=citus_upgrade_test
FROM=0.8.0
ext_dir=$("$PG_CONFIG" --sharedir)/extension
fail() { printf 'Citus upgrade test FAILED: %s\n' "$*" >&2; exit 1; }
q() { psql_admin "$PORT" "$DB" -At -c "$1"; }

cp "$ROOT/extension/pg_tenancy/released/pg_tenancy--$FROM.sql" "$ext_dir/"
trap 'rm -f "$ext_dir/pg_tenancy--$FROM.sql"' EXIT

# scaled_out VERSION: a database on the cluster with that version, a table
# of the user's, audited, 20 tenants with a row each, then scale_out().
scaled_out() {
    for n in 0 1 2; do
        psql_admin "$((PORT + n))" postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" >/dev/null
        psql_admin "$((PORT + n))" "$DB" -c "CREATE EXTENSION citus" >/dev/null
    done
    psql_admin "$PORT" "$DB" -v ON_ERROR_STOP=1 >/dev/null <<SQL
SELECT citus_set_coordinator_host('127.0.0.1', $PORT);
SELECT citus_add_node('127.0.0.1', $((PORT + 1)));
SELECT citus_add_node('127.0.0.1', $((PORT + 2)));
CREATE EXTENSION pg_tenancy VERSION '$1';
CREATE TABLE public.items (tenant_id uuid NOT NULL, id int NOT NULL, label text, PRIMARY KEY (tenant_id, id));
SELECT tenancy.enable('public.items');
SELECT tenancy.enable_audit('public.items');
-- Tenants until one sits on each worker.
DO \$\$
BEGIN
    FOR i IN 1..20 LOOP
        PERFORM tenancy.create_tenant('up-' || i, 'Upgrade ' || i);
    END LOOP;
END
\$\$;
-- A row of each tenant before scale-out: 0.8.0 recorded its copy into the
-- shards as an INSERT on the worker.
INSERT INTO public.items SELECT id, 0, 'before' FROM tenancy.tenants;
SELECT * FROM tenancy.scale_out();
SQL
}

# The current version: copying rows into shards records nothing.
current=$(sed -n "s/^default_version = '\(.*\)'$/\1/p" "$ext_dir/pg_tenancy.control")
scaled_out "$current"
expect "$current: one entry per row inserted before scale-out, none for its copies" \
    "SELECT count(*) FILTER (WHERE table_name = 'public.items') || ' ' || count(*) FILTER (WHERE table_name = 'tenancy.tenants')
     FROM tenancy.audit_log" "20 20"
expect "$current: no entry names a shard" "SELECT count(*) FROM tenancy.audit_log WHERE table_name ~ '_[0-9]+\$'" 0
expect "$current: every partition of the upgraded log has a replica identity for shard moves" \
    "SELECT count(*) FROM pg_class c WHERE c.relnamespace = 'tenancy'::regnamespace AND c.relname LIKE 'audit\_log%' AND c.relkind IN ('r', 'p') AND c.relreplident <> 'f'" 0
expect "$current: check() finds nothing in the way of shard moves" \
    "SELECT count(*) FROM tenancy.check() WHERE object_type = 'node' OR problem LIKE '%replica identity%'" 0
# Distributed functions a NULL argument would crash Citus with: with
# pg_tenancy preloaded (sql/citus/postgresql.conf), its planner hook refuses
# the call, so check() names none of them (here, where no other test reads
# check() about the user's own functions).
psql_admin "$PORT" "$DB" >/dev/null <<'SQL'
CREATE FUNCTION public.lax(t uuid) RETURNS int LANGUAGE sql AS 'SELECT 1';
CREATE FUNCTION public.rows_of(t uuid) RETURNS SETOF int LANGUAGE sql STRICT AS 'SELECT 1';
CREATE FUNCTION public.safe(t uuid) RETURNS int LANGUAGE sql STRICT AS 'SELECT 1';
SELECT create_distributed_function('public.lax(uuid)', '$1', colocate_with := 'public.items');
SELECT create_distributed_function('public.rows_of(uuid)', '$1', colocate_with := 'public.items');
SELECT create_distributed_function('public.safe(uuid)', '$1', colocate_with := 'public.items');
SQL
expect "check() names no distributed function: pg_tenancy is preloaded" \
    "SELECT count(*) FROM tenancy.check() WHERE object_type = 'function'" 0
for call in "SELECT public.lax(NULL)" "SELECT * FROM public.rows_of(NULL)"; do
    out=$(psql_admin "$PORT" "$DB" -At -c "$call" 2>&1) && fail "$call succeeded: $out"
    case $out in
        *"which Citus routes the call by, is NULL"*) ;;
        *) fail "$call: $out" ;;
    esac
done
expect "a STRICT one returning one value is NULL, as Postgres makes it" "SELECT public.safe(NULL) IS NULL" t
expect "the coordinator is still up" "SELECT 1" 1

scaled_out "$FROM"
expect "the test starts from $FROM" "SELECT extversion FROM pg_extension WHERE extname = 'pg_tenancy'" "$FROM"
# One tenant per worker, by where its shard of public.items sits.
mapfile -t TENANTS < <(q "SELECT DISTINCT ON (s.nodeport) t.id FROM tenancy.tenants t, citus_shards s
    WHERE s.table_name = 'public.items'::regclass
      AND s.shardid = get_shard_id_for_distribution_column('public.items', t.id)
    ORDER BY s.nodeport, t.slug")
[ "${#TENANTS[@]}" = 2 ] || fail "no tenant on each worker (${TENANTS[*]})"
write() { # write TENANT FIRST_ID: two rows, an update, a membership (a reference table)
    psql_admin "$PORT" "$DB" >/dev/null <<SQL
INSERT INTO public.items VALUES ('$1', $2, 'a'), ('$1', $2 + 1, 'b');
UPDATE public.items SET label = 'c' WHERE tenant_id = '$1' AND id = $2;
SELECT tenancy.add_member('$1', md5('$1' || $2)::uuid, 'member');
SQL
}
for t in "${TENANTS[@]}"; do write "$t" 1; done
# What 0.8.0 did: the coordinator shows none of the workers' entries.
expect "$FROM: the coordinator's log has the entries from before scale-out only" \
    "SELECT count(*) FROM tenancy.audit_log WHERE table_name LIKE 'public.items%'" 20

# The upgrade: every node, then scale_out() again.
q "ALTER EXTENSION pg_tenancy UPDATE" >/dev/null
for n in 1 2; do
    v=$(psql_admin "$((PORT + n))" "$DB" -At -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_tenancy'")
    [ "$v" != "$FROM" ] || psql_admin "$((PORT + n))" "$DB" -c "ALTER EXTENSION pg_tenancy UPDATE" >/dev/null
done
# Between the update and scale_out(): writes go on, and are kept once.
for t in "${TENANTS[@]}"; do write "$t" 20; done
# A worker whose entries are set aside while the log is not sharded yet
# (scale_out() running, or failed) refuses audited writes: an entry
# written then would be left behind.
w1="${TENANTS[0]}"
w1_port=$(q "SELECT s.nodeport FROM citus_shards s WHERE s.table_name = 'public.items'::regclass
             AND s.shardid = get_shard_id_for_distribution_column('public.items', '$w1')")
psql_admin "$w1_port" "$DB" -c "CREATE TABLE tenancy._audit_log_stash (id bigint)" >/dev/null
err=$(psql_admin "$PORT" "$DB" -c "INSERT INTO public.items VALUES ('$w1', 99, 'x')" 2>&1 >/dev/null) &&
    fail "a write on a worker with set-aside entries went through"
case $err in *"tenancy.audit_log is being sharded"*) ;; *) fail "unexpected refusal: $err" ;; esac
psql_admin "$w1_port" "$DB" -c "DROP TABLE tenancy._audit_log_stash" >/dev/null
expect "the refused write left nothing" "SELECT count(*) FROM public.items WHERE id = 99" 0
expect "check() warns before scale_out" \
    "SELECT count(*) FROM tenancy.check() WHERE object_name = 'tenancy.audit_log' AND severity = 'warning'" 1
expect "scale_out distributes the audit log" \
    "SELECT string_agg(relation::text || ': ' || became, ', ') FROM tenancy.scale_out()" \
    "tenancy.audit_log: distributed by tenant_id"
expect "scale_out again does nothing (but drop the workers' safety copies)" "SELECT count(*) FROM tenancy.scale_out()" 0
expect "check() is content" \
    "SELECT count(*) FROM tenancy.check() WHERE severity IN ('error', 'warning')" 0
for t in "${TENANTS[@]}"; do write "$t" 10; done
# One statement of 25,000 rows on a worker: its entries go into the sharded
# log in parts (a jsonb value holds at most 256 MB).
q "INSERT INTO public.items SELECT '$w1', g, 'bulk' FROM generate_series(1000, 25999) g" >/dev/null
expect "every row of a big statement has its entry" \
    "SELECT count(*) FROM tenancy.audit_log WHERE tenant_id = '$w1' AND table_name = 'public.items' AND new_values->>'label' = 'bulk'" 25000

for t in "${TENANTS[@]}"; do
    expect "$t: every entry of public.items, before and after the upgrade" \
        "SELECT string_agg(action, ',' ORDER BY at, id) FROM tenancy.audit_log
         WHERE tenant_id = '$t' AND table_name = 'public.items' AND new_values->>'label' IS DISTINCT FROM 'bulk'" \
        "INSERT,INSERT,INSERT,UPDATE,INSERT,INSERT,UPDATE,INSERT,INSERT,UPDATE"
    expect "$t: each membership once (0.8.0 recorded one per node)" \
        "SELECT count(*) FROM tenancy.audit_log WHERE tenant_id = '$t' AND table_name = 'tenancy.user_roles'" 3
    expect "$t: the tenant's creation once" \
        "SELECT count(*) FROM tenancy.audit_log WHERE row_key->>'id' = '$t' AND table_name = 'tenancy.tenants'" 1
done
expect "no entry names a shard" "SELECT count(*) FROM tenancy.audit_log WHERE table_name ~ '_[0-9]+\$'" 0
# The daily maintenance drops the workers' safety copies too.
psql_admin "$w1_port" "$DB" -c "CREATE TABLE tenancy._audit_log_stash (id bigint)" >/dev/null
q "SELECT count(*) FROM tenancy.audit_maintain()" >/dev/null
for n in 1 2; do
    [ "$(psql_admin "$((PORT + n))" "$DB" -At -c "SELECT to_regclass('tenancy._audit_log_stash') IS NULL")" = t ] ||
        fail "worker $n kept tenancy._audit_log_stash"
done
psql_admin "$PORT" postgres -c "DROP DATABASE $DB WITH (FORCE)" >/dev/null
for n in 1 2; do psql_admin "$((PORT + n))" postgres -c "DROP DATABASE $DB WITH (FORCE)" >/dev/null; done
echo "ok: a Citus deployment of $FROM upgrades, and its audit entries are read through the coordinator"
