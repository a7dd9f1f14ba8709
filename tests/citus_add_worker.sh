#!/usr/bin/env bash
# A worker added to the running Citus cluster takes its share of the
# tenants, as README "Moving tenants between workers" says: citus_add_node,
# the roles' LOGIN on the workers, check() naming the new node until
# scale_out() runs again, then the rebalancer in the background. A tenant
# whose shards moved onto the new worker reads and writes its rows over
# HTTP as before, audited.
# Usage: tests/citus_add_worker.sh COORDINATOR_PORT NEW_WORKER_PORT HTTP_PORT DIR
# (DIR: the cluster's directory; the new node goes in DIR/node3, started
# with the settings and context key of the others.)
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
PORT=$1 NEW=$2 HTTP=$3 DIR=$4
q() { psql_admin "$PORT" "$DB_NAME" -At -c "$1"; }
fail() { echo "Citus add-worker test FAILED: $*" >&2; exit 1; }

start_cluster "$DIR/node3" "$NEW" "$ROOT/sql/citus/postgresql.conf" "$DIR/context_key.conf"
psql_admin "$NEW" postgres -c "CREATE DATABASE $DB_NAME" >/dev/null
psql_admin "$NEW" "$DB_NAME" -c "CREATE EXTENSION citus" >/dev/null
# Citus creates the extensions, roles and shared tables on it.
q "SELECT citus_add_node('127.0.0.1', $NEW)" >/dev/null
expect "the new node has pg_tenancy" \
    "SELECT result FROM run_command_on_workers('SELECT extversion FROM pg_extension WHERE extname = ''pg_tenancy''') WHERE nodeport = $NEW" \
    "$(q "SELECT extversion FROM pg_extension WHERE extname = 'pg_tenancy'")"
for role in authenticated analyst ledger_owner; do
    q "SELECT run_command_on_workers('SET citus.enable_ddl_propagation TO off; ALTER ROLE $role LOGIN')" >/dev/null
done
expect "check() names the new node until scale_out() runs again: shard moves" \
    "SELECT string_agg(object_name || ': ' || problem, ' | ') FROM tenancy.check() WHERE object_type = 'node' AND severity = 'warning'" \
    "127.0.0.1:$NEW: ledger_owner, owning sharded tenant tables, may not create their shards' triggers and foreign keys on this node: moving shards here fails"
# Citus creates the distributed functions there executable by PUBLIC.
expect "check() names the new node until scale_out() runs again: functions every role may execute there" \
    "SELECT object_name || ' ' || (problem LIKE 'lets every role execute distributed functions that the coordinator lets only some roles execute: %ledger_routed.reconcile_for(uuid,jsonb)%') FROM tenancy.check() WHERE object_type = 'node' AND severity = 'error'" \
    "127.0.0.1:$NEW true"
expect "scale_out() again changes no table" "SELECT count(*) FROM tenancy.scale_out()" 0
expect "then check() finds nothing in the way" "SELECT count(*) FROM tenancy.check() WHERE object_type = 'node'" 0
expect "and PUBLIC executes the same distributed functions on every node" \
    "SELECT count(DISTINCT result) FROM run_command_on_all_nodes(\$\$SELECT count(*) FROM pg_dist_object o JOIN pg_proc p ON p.oid = o.objid
       WHERE o.classid = 'pg_proc'::regclass AND EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                                                         WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE')\$\$)" 1

job=$(q "SELECT citus_rebalance_start()")
[ -n "$job" ] || fail "the rebalancer scheduled no moves onto the new worker"
q "SELECT citus_rebalance_wait()" >/dev/null
expect "the rebalance job finished" "SELECT state FROM pg_dist_background_job WHERE job_id = $job" finished
moved=$(q "SELECT count(*) FROM citus_shards WHERE table_name = 'ledger.invoices'::regclass AND nodeport = $NEW")
[ "$moved" -gt 0 ] || fail "no shard of ledger.invoices moved onto the new worker"

# A tenant now on the new worker, over HTTP with its admin's token.
read -r tenant admin < <(q "SELECT u.tenant_id, u.user_id FROM tenancy.user_roles u
    JOIN citus_shards s ON s.table_name = 'ledger.invoices'::regclass
     AND s.shardid = get_shard_id_for_distribution_column('ledger.invoices', u.tenant_id)
    WHERE u.role = 'admin' AND s.nodeport = $NEW LIMIT 1" | tr '|' ' ')
[ -n "${tenant:-}" ] || fail "no tenant's shards sit on the new worker"
token=$(python3 "$ROOT/scripts/dev_token.py" "$(jwt_secret)" "$admin" "$tenant")
before=$(q "SELECT count(*) FROM ledger.invoices WHERE tenant_id = '$tenant'")
status=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$HTTP/invoices" \
    -H "Authorization: Bearer $token" -H "Content-Type: application/json" -H "X-Request-Id: req-new-worker" \
    -d '{"amount": "3.00", "currency": "EUR", "issue_date": "2026-11-01", "reference": "INV-NEW-WORKER", "counterparty": "Initech"}')
[ "$status" = 201 ] || fail "POST /invoices for a tenant on the new worker answered $status"
seen=$(curl -s "http://127.0.0.1:$HTTP/invoices?select=reference" -H "Authorization: Bearer $token" |
    python3 -c 'import json, sys; print(len(json.load(sys.stdin)))')
[ "$seen" = $((before + 1)) ] || fail "GET /invoices showed $seen rows, expected $((before + 1))"
expect "the write on the new worker is audited once" \
    "SELECT count(*) FROM tenancy.audit_log WHERE tenant_id = '$tenant' AND request_id = 'req-new-worker'" 1
# Called on the new worker, a function only its owner may call refuses the
# API role there too.
out=$(psql_admin "$PORT" "$DB_NAME" -At 2>&1 <<SQL || true
BEGIN;
SELECT tenancy.set_tenant('$tenant') IS NULL;
SET LOCAL ROLE authenticated;
SELECT count(*) FROM ledger_routed.reconcile_for('$tenant', '{}');
SQL
)
case $out in
    *"permission denied for function reconcile_for"*) ;;
    *) fail "the API role's call of ledger_routed.reconcile_for on the new worker: $out" ;;
esac
echo "ok: a worker added later takes tenants' shards, and a tenant on it reads, writes and is audited"
