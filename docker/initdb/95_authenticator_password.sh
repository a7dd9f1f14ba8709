#!/bin/sh
# Gives PostgREST's login role the password from the environment (the native
# dev stack uses trust auth on loopback instead).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v pw="$AUTHENTICATOR_PASSWORD" -c "ALTER ROLE authenticator PASSWORD :'pw'"
