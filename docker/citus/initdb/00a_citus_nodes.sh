#!/bin/sh
# Coordinator only, once the workers are up (compose waits until they are
# healthy): tells Citus where the coordinator is and adds the two workers.
# Named to run after the image's 001-create-citus-extension.sql (CREATE
# EXTENSION citus) and before sql/01_extensions.sql, in byte order and in the
# image's locale alike. Roles sql/00_roles.sql created already (the order
# depends on the locale) are copied to each worker as it is added.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
CREATE EXTENSION IF NOT EXISTS citus;
SELECT citus_set_coordinator_host('coordinator', 5432);
SELECT citus_add_node('worker1', 5432);
SELECT citus_add_node('worker2', 5432);
SQL
