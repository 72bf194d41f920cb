#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on a loopback port, for the tests and for trying the PostgreSQL backend.
#   scripts/pg-cluster.sh start [DIR] [PORT]   initdb (first time) and start; creates role and database pkr_demo
#   scripts/pg-cluster.sh stop  [DIR]          stop (fast shutdown)
#   scripts/pg-cluster.sh restart [DIR]        stop then start again, keeping the data
#   scripts/pg-cluster.sh destroy [DIR]        stop and delete the directory
# Defaults: DIR=${PKR_PG_DIR:-/tmp/pkr-pg}, PORT=${PKR_PG_PORT:-55432}. The server runs as the postgres user
# when invoked as root (PostgreSQL refuses to run as root); connections need a password (scram-sha-256).
set -euo pipefail

command=${1:-}
dir=${2:-${PKR_PG_DIR:-/tmp/pkr-pg}}
port=${3:-${PKR_PG_PORT:-55432}}
bin=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)}
[ -x "$bin/pg_ctl" ] || { echo "pg-cluster: PostgreSQL server binaries not found (apt-get install postgresql)" >&2; exit 1; }

as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start() {
    if [ ! -f "$dir/PG_VERSION" ]; then
        mkdir -p "$dir"
        if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$dir"; chmod 700 "$dir"; fi
        as_owner "$bin/initdb" -D "$dir" -U postgres --auth-local=trust --auth-host=scram-sha-256 -E UTF8 >/dev/null
        echo "port = $port" >> "$dir/postgresql.conf"
    fi
    if ! as_owner "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
        as_owner "$bin/pg_ctl" -D "$dir" -w -t 60 -l "$dir/server.log" \
            -o "-c listen_addresses=127.0.0.1 -c unix_socket_directories=$dir -c max_connections=300" start >/dev/null
    fi
    as_owner "$bin/psql" -h "$dir" -p "$port" -U postgres -d postgres -qAt -v ON_ERROR_STOP=1 <<'SQL' >/dev/null
SELECT 'CREATE ROLE pkr_demo LOGIN CREATEDB PASSWORD ''pkr_demo''' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pkr_demo')\gexec
SELECT 'CREATE DATABASE pkr_demo OWNER pkr_demo' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'pkr_demo')\gexec
SQL
    echo "postgresql running: host 127.0.0.1 port $port, user pkr_demo, password pkr_demo, database pkr_demo (data in $dir)"
}

stop() {
    if [ -f "$dir/PG_VERSION" ] && as_owner "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
        as_owner "$bin/pg_ctl" -D "$dir" -m fast -w stop >/dev/null
    fi
}

case "$command" in
    start) start ;;
    stop) stop ;;
    restart) stop; start ;;
    destroy) stop; rm -rf "$dir" ;;
    *) echo "usage: $0 start|stop|restart|destroy [DIR] [PORT]" >&2; exit 2 ;;
esac
