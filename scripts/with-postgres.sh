#!/usr/bin/env bash
# Run a command against a throwaway PostgreSQL: initdb into a fresh folder under the temporary
# directory, listen only on a unix socket there, export DATABASE_URL, stop and remove it after.
# Usage: scripts/with-postgres.sh COMMAND [ARGS...]   (make test runs the `postgres` tests so)
set -euo pipefail

pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
  echo "PostgreSQL is not installed (Debian: apt-get install postgresql)." >&2
  exit 1
fi

# Not under the data directory: that is 0700 (its secrets), and as root the server runs as the
# `postgres` user, who could not reach a folder inside it.
folder="$(mktemp -d "${TMPDIR:-/tmp}/trainhub-pg-test.XXXXXX")"

# PostgreSQL refuses to run as root: as root, the server runs as the `postgres` user.
as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
if [ "$(id -u)" -eq 0 ]; then chown postgres: "$folder"; fi

stop() {
  as_postgres "$pg_bin/pg_ctl" -D "$folder/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$folder"
}
trap stop EXIT

as_postgres "$pg_bin/initdb" -D "$folder/data" -U trainhub --auth=trust -E UTF8 --no-locale >"$folder/initdb.log"
# No TCP at all: the socket lives in the throwaway folder. fsync off: the data is thrown away.
as_postgres "$pg_bin/pg_ctl" -D "$folder/data" -l "$folder/server.log" -w \
  -o "-c listen_addresses='' -k $folder -c fsync=off -c full_page_writes=off -c max_connections=200" start >/dev/null

socket="$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$folder")"
echo "PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}') on the socket in $folder"
DATABASE_URL="postgres://trainhub@${socket}/trainhub" "$@"
