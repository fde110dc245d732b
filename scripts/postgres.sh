#!/usr/bin/env bash
# A throwaway PostgreSQL for the postgres test tier and the benchmark; prints its URL.
#
#   scripts/postgres.sh start    # start it (or find it running); prints only the URL on stdout
#   scripts/postgres.sh url      # print the URL
#   scripts/postgres.sh stop     # stop it (a temp cluster is also deleted)
#   scripts/postgres.sh free-port   # a free loopback port, for a private MODELMILL_PG_PORT
#
# Two kinds, chosen by MODELMILL_PG_MODE:
#   temp   (default) a fresh cluster made with initdb in MODELMILL_PG_DIR, listening on
#          127.0.0.1:MODELMILL_PG_PORT (default 55432; the folder defaults to one per port, so
#          runs with different ports do not meet); run as the `postgres` user when we are root,
#          since PostgreSQL refuses to run as root.
#   debian the cluster Debian's `postgresql` package made (pg_ctlcluster); needs root.
# Either way the superuser `postgres` gets the password MODELMILL_PG_PASSWORD (default postgres).
# Needs PostgreSQL's server binaries: `apt-get install postgresql` (`make test` does it as root).
set -euo pipefail

mode=${MODELMILL_PG_MODE:-temp}
port=${MODELMILL_PG_PORT:-55432}
password=${MODELMILL_PG_PASSWORD:-postgres}
dir=${MODELMILL_PG_DIR:-${TMPDIR:-/tmp}/modelmill-pg-$(id -u)-$port}

die() { echo "postgres.sh: $*" >&2; exit 1; }

bin_dir() {
  # Debian keeps the server tools out of PATH, one folder per major version: take the newest.
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$found" ] && [ -x "$found/initdb" ]; then echo "$found"; return; fi
  command -v initdb >/dev/null 2>&1 && { dirname "$(command -v initdb)"; return; }
  die "no PostgreSQL server binaries found; install Debian's 'postgresql' package"
}

# Run a command as the database owner: `postgres` when we are root, else ourselves.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' user"
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

url() { echo "postgresql+psycopg://postgres:${password}@127.0.0.1:${1}/postgres"; }

temp_running() { [ -f "$dir/data/PG_VERSION" ] && as_owner "$(bin_dir)/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; }

temp_start() {
  local bin
  bin=$(bin_dir)
  if temp_running; then url "$port"; return; fi
  rm -rf "$dir"
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres: "$dir"
  printf '%s\n' "$password" >"$dir/password"
  [ "$(id -u)" = 0 ] && chown postgres: "$dir/password"
  as_owner "$bin/initdb" -D "$dir/data" -U postgres --pwfile="$dir/password" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir" start \
    >/dev/null || { cat "$dir/server.log" >&2; die "PostgreSQL did not start"; }
  echo "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') running in $dir" >&2
  url "$port"
}

temp_stop() {
  if temp_running; then
    as_owner "$(bin_dir)/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
  fi
  rm -rf "$dir"
}

debian_cluster() {
  # "VERSION CLUSTER PORT" of the first cluster pg_lsclusters lists.
  command -v pg_lsclusters >/dev/null || die "pg_lsclusters not found; install 'postgresql'"
  local line
  line=$(pg_lsclusters --no-header 2>/dev/null | head -n 1)
  [ -n "$line" ] || die "Debian's postgresql package made no cluster (pg_createcluster 15 main)"
  awk '{print $1, $2, $3}' <<<"$line"
}

debian_start() {
  [ "$(id -u)" = 0 ] || die "MODELMILL_PG_MODE=debian needs root (pg_ctlcluster)"
  local version cluster dport
  read -r version cluster dport <<<"$(debian_cluster)"
  pg_ctlcluster "$version" "$cluster" start 2>/dev/null || true
  pg_ctlcluster "$version" "$cluster" status >/dev/null || die "cluster $version/$cluster is down"
  runuser -u postgres -- psql -p "$dport" -qc "ALTER USER postgres PASSWORD '${password}'" >/dev/null
  url "$dport"
}

debian_stop() {
  local version cluster dport
  read -r version cluster dport <<<"$(debian_cluster)"
  pg_ctlcluster "$version" "$cluster" stop 2>/dev/null || true
}

case "$mode:${1:-}" in
  temp:start) temp_start ;;
  temp:stop) temp_stop ;;
  temp:url) url "$port" ;;
  debian:start) debian_start ;;
  debian:stop) debian_stop ;;
  debian:url) read -r _ _ dport <<<"$(debian_cluster)"; url "$dport" ;;
  *:free-port) python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' ;;
  *) die "usage: [MODELMILL_PG_MODE=temp|debian] $0 start|stop|url|free-port" ;;
esac
