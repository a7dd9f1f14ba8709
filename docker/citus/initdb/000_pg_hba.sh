#!/bin/sh
# Every node: who may connect from the other containers. The image's
# pg_hba.conf ends with "host all all all scram-sha-256" (a password for
# every TCP connection); these rules go before it (the first match wins).
#
#   * every node: its own addresses (samehost) are trusted, as its Unix
#     socket already is, for Citus connecting to the node it runs on by its
#     node name;
#   * workers (CITUS_NODE=worker): the other nodes of the compose network
#     (samenet) log in as postgres with the password (the servers have it
#     in PGPASSWORD), and as any other role without one: Citus opens worker
#     connections as the role running the query (authenticated, analyst,
#     ledger_owner, tenancy_jobs, ...), which have no passwords. Workers
#     publish no port: samenet is the compose network, its containers and
#     the Docker host at its gateway address.
#
# The coordinator keeps passwords for everything from outside (PostgREST
# logs in as authenticator). Production restricts the workers' rules to the
# coordinator's address and gives roles passwords (.pgpass, pg_dist_authinfo).
set -eu
rules='host all all samehost trust'
case ${CITUS_NODE:?set CITUS_NODE to coordinator or worker} in
    coordinator) ;;
    worker) rules="$rules\nhost all $POSTGRES_USER samenet scram-sha-256\nhost all all samenet trust" ;;
    *) echo "CITUS_NODE must be coordinator or worker, not $CITUS_NODE" >&2; exit 1 ;;
esac
hba=$PGDATA/pg_hba.conf
tmp=$(mktemp)
awk -v rules="# docker/citus/initdb/000_pg_hba.sh:\n$rules" '
    !done && $1 == "host" && $2 == "all" && $3 == "all" && $4 == "all" { print rules; done = 1 }
    { print }
    END { if (!done) print rules }
' "$hba" >"$tmp"
cat "$tmp" >"$hba"
rm -f "$tmp"
