#!/usr/bin/env bash
# Installs the release artifact (scripts/package) into a fresh cluster that
# never saw the build tree: from the unpacked tarball only, with its own
# install.sh, postgresql.conf settings and sql/. Checks on the way that a
# server without pg_cron preloaded gets a clear message and keeps nothing.
# Usage: tests/artifact_install.sh ARTIFACT.tar.gz PORT WORKDIR
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"

ARTIFACT=$1 PORT=$2 WORK=$3
fail() { printf 'artifact install test FAILED: %s\n' "$*" >&2; exit 1; }
rm -rf "$WORK"
mkdir -p "$WORK/unpacked"
tar -xzf "$ARTIFACT" -C "$WORK/unpacked" --strip-components=1
PKG=$WORK/unpacked

# Nothing of the build may linger in Postgres' directories.
rm -f "$("$PG_CONFIG" --pkglibdir)/pg_tenancy.so" "$("$PG_CONFIG" --sharedir)"/extension/pg_tenancy*
"$PKG/install.sh" "$PG_CONFIG" >/dev/null
[ -f "$("$PG_CONFIG" --pkglibdir)/pg_tenancy.so" ] || fail "install.sh did not install the library"

# A cluster without the required settings.
chown -R postgres: "$WORK"
pg_as "$PG_BIN/initdb" -D "$WORK/data" -U postgres --auth=trust --no-instructions -E UTF8 >/dev/null
printf "listen_addresses = '127.0.0.1'\nport = %s\nunix_socket_directories = '%s'\n" "$PORT" "$WORK" >>"$WORK/data/postgresql.conf"
pg_as "$PG_BIN/pg_ctl" -D "$WORK/data" -l "$WORK/server.log" -w start >/dev/null
trap 'pg_as "$PG_BIN/pg_ctl" -D "$WORK/data" -m fast -w stop >/dev/null 2>&1 || true' EXIT
psql_admin "$PORT" postgres -c "CREATE DATABASE $DB_NAME" >/dev/null
psql_admin "$PORT" "$DB_NAME" --single-transaction -f "$PKG/sql/00_roles.sql" >/dev/null
if out=$(psql_admin "$PORT" "$DB_NAME" --single-transaction -f "$PKG/sql/01_extensions.sql" 2>&1); then
    fail "sql/01_extensions.sql loaded on a server without pg_cron preloaded"
fi
grep -q 'pg_cron is not in shared_preload_libraries' <<<"$out" || fail "unclear message: $out"
grep -q 'sql/postgresql.conf' <<<"$out" || fail "the message does not name the fix: $out"
[ "$(psql_admin "$PORT" "$DB_NAME" -Atc "SELECT count(*) FROM pg_extension WHERE extname = 'pg_tenancy'")" = 0 ] ||
    fail "a failed sql/01_extensions.sql left the extension half-installed"

# Now the documented setup: the artifact's settings, a restart, all of sql/.
cat "$PKG/sql/postgresql.conf" >>"$WORK/data/postgresql.conf"
pg_as "$PG_BIN/pg_ctl" -D "$WORK/data" -l "$WORK/server.log" -w restart >/dev/null
for f in "$PKG"/sql/[0-9]*.sql; do
    psql_admin "$PORT" "$DB_NAME" --single-transaction -f "$f" >/dev/null || fail "loading $(basename "$f") failed"
done

# Smoke test over SQL.
psql_admin "$PORT" "$DB_NAME" -At <<'SQL' >"$WORK/smoke.out" || fail "smoke test failed: $(cat "$WORK/smoke.out")"
SELECT tenancy.version();
SELECT count(*) FROM tenancy.check() WHERE severity <> 'notice';
BEGIN;
SELECT tenancy.set_tenant('acme') IS NOT NULL;
SET LOCAL ROLE analyst;
SELECT count(*) > 0 AND count(*) = count(*) FILTER (WHERE tenant_id = tenancy.current_tenant_id()) FROM ledger.invoices;
COMMIT;
SELECT count(*) FROM cron.job WHERE command = 'CALL tenancy.purge_idempotency_keys()';
SQL
expected=$(printf '%s\n0\nt\nt\n1' "$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/Cargo.toml" | head -n 1)")
[ "$(cat "$WORK/smoke.out")" = "$expected" ] || fail "unexpected smoke output: $(cat "$WORK/smoke.out")"
echo "ok: artifact $(basename "$ARTIFACT") installs into a fresh cluster; a server without pg_cron gets a clear error"
