#!/usr/bin/env bash
# Starts a private PostgreSQL for l3ha's tests (its own data directory and
# port, trust auth on loopback) and prints its URL. Idempotent: a running
# instance is reused. `scripts/postgres.sh stop` stops it.
#   L3HA_PG_DIR   data directory (default /tmp/l3ha-pg)
#   L3HA_PG_PORT  port (default 55432)
set -euo pipefail
dir=${L3HA_PG_DIR:-/tmp/l3ha-pg}
port=${L3HA_PG_PORT:-55432}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
if [[ -z "$bin" ]]; then
  echo "PostgreSQL server binaries not found; run scripts/deps.sh" >&2
  exit 1
fi
as_pg() {
  if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}
if [[ "${1:-start}" == stop ]]; then
  [[ -f "$dir/data/postmaster.pid" ]] && as_pg "$bin/pg_ctl" -D "$dir/data" -m fast stop >/dev/null
  exit 0
fi
mkdir -p "$dir"
[[ $(id -u) == 0 ]] && chown postgres: "$dir"
if [[ ! -f "$dir/data/PG_VERSION" ]]; then
  as_pg "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >"$dir/initdb.log"
fi
if ! as_pg "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
  as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off -c synchronous_commit=off" start >/dev/null
fi
for _ in $(seq 1 60); do
  "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" && break
  sleep 0.5
done
"$bin/pg_isready" -q -h 127.0.0.1 -p "$port" || { echo "PostgreSQL did not come up; see $dir/server.log" >&2; exit 1; }
echo "postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"
