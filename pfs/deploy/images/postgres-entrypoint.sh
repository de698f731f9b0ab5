#!/bin/sh
# The official postgres image's contract, the part `pfs deploy kubernetes --local` uses: on an empty PGDATA,
# a cluster whose superuser is POSTGRES_USER with POSTGRES_PASSWORD and a database POSTGRES_DB; then the
# server, as the user postgres (it refuses root), on every address, passwords required over the network.
set -eu
: "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=$POSTGRES_USER}"
[ -n "${POSTGRES_PASSWORD:-}" ] || { echo "postgres-entrypoint: POSTGRES_PASSWORD is not set" >&2; exit 1; }
as_postgres() { setpriv --reuid postgres --regid postgres --init-groups "$@"; }
mkdir -p "$PGDATA"
chown postgres:postgres "$PGDATA"  # a volume's directory comes owned by root
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  password=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" > "$password"
  chown postgres "$password"
  # UTF8 as the official image makes it: without a locale initdb picks SQL_ASCII, whose text psycopg returns as bytes
  as_postgres initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$password" -E UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=scram-sha-256
  rm -f "$password"
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  if [ "$POSTGRES_DB" != postgres ]; then  # initdb made only the database postgres
    as_postgres postgres --single -D "$PGDATA" -c unix_socket_directories=/tmp postgres <<SQL
CREATE DATABASE "$POSTGRES_DB";
SQL
  fi
fi
exec setpriv --reuid postgres --regid postgres --init-groups postgres -D "$PGDATA" -c listen_addresses='*' \
  -c unix_socket_directories=/tmp
