#!/usr/bin/env bash
# A checkout works wherever it is: this copies the checkout's scripts and
# deployment files below a directory of mode 0700 (as /root is, where the
# postgres OS user cannot go), and from there starts a cluster with the
# same functions scripts/run uses, loads sql/ with the demo tenants, has
# the server read a file as the benchmarks do (COPY FROM), and stops it.
# Usage: tests/clone_anywhere.sh PORT   (the extension must be installed)
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"

PORT=$1
fail() { printf 'clone-anywhere test FAILED: %s\n' "$*" >&2; exit 1; }
home=$(mktemp -d /tmp/pg_tenancy-home.XXXXXX)
chmod 0700 "$home"
copy=$home/pg_tenancy
mkdir -p "$copy"
cp -r "$ROOT/scripts" "$ROOT/sql" "$ROOT/api-config" "$copy/"
trap 'rm -rf "$home"' EXIT
sudo -u postgres test -x "$copy" 2>/dev/null && fail "the postgres user can reach $copy: the test proves nothing"

# A fresh shell in the copy, as a user who cloned it there would have.
cat >"$home/inside.sh" <<'SH'
set -euo pipefail
source "$1/scripts/lib.sh"
dir=$(run_dir anywhere)
trap 'stop_cluster "$dir"; rm -rf "$RUN_BASE"' EXIT
start_cluster "$dir" "$2"
load_sql "$2" --demo
printf 'a,1\nb,2\n' >"$dir/rows.csv"
psql_admin "$2" "$DB_NAME" -At -v f="$dir/rows.csv" <<'SQL'
CREATE TEMP TABLE t (k text, v int);
COPY t FROM :'f' (FORMAT csv);
SELECT sum(v) FROM t;
SELECT count(*) FROM tenancy.tenants WHERE slug IN ('acme', 'globex');
SQL
echo "run directory: $RUN_BASE"
SH
out=$(env -u PG_TENANCY_RUN_DIR bash "$home/inside.sh" "$copy" "$PORT" 2>&1) || fail "$out"
grep -qx 3 <<<"$out" || fail "the server could not read a file of the run directory: $out"
grep -qx 2 <<<"$out" || fail "the demo tenants were not loaded: $out"
case $out in *"run directory: $home"*) fail "the run directory is inside the checkout: $out" ;; esac
echo "ok: a checkout below a 0700 directory starts a cluster, loads sql/ and has the server read a file"
