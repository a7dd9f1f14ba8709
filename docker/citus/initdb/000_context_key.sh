#!/bin/sh
# Every node: tenancy.context_key, the secret the coordinator signs the
# tenant context with and the workers check it against, from
# TENANCY_CONTEXT_KEY (the same on every node, 32 characters or more).
# Written into this cluster's postgresql.conf rather than passed with -c, so
# that it shows in no process list. Runs once, when the data directory is
# created: to change the key later, edit postgresql.conf on every node and
# reload. The reload makes the rest of the coordinator's initialisation
# (sql/citus/17_distribute.sql needs the key) run with it.
set -eu
key=${TENANCY_CONTEXT_KEY:-}
if [ "${#key}" -lt 32 ]; then
    echo "TENANCY_CONTEXT_KEY must be set, at least 32 characters, the same on every node" >&2
    exit 1
fi
case $key in
    *"'"* | *\\* | *"
"*)
        echo "TENANCY_CONTEXT_KEY must contain no quote, backslash or newline" >&2
        exit 1
        ;;
esac
printf "\n# From TENANCY_CONTEXT_KEY (docker/citus/initdb/000_context_key.sh).\ntenancy.context_key = '%s'\n" \
    "$key" >>"$PGDATA/postgresql.conf"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" -qAt \
    -c "SELECT pg_reload_conf()" >/dev/null
