#!/usr/bin/env bash
# Storage throughput benchmark: keysafe on SQLite and on a local PostgreSQL 15, in one run.
# Starts its own PostgreSQL cluster (initdb defaults, plus what docs/postgresql.md requires:
# fsync=on, synchronous_commit=on, stated explicitly) on 127.0.0.1, as the postgres user when
# run as root; everything lives under $W and is removed at the end.
set -euo pipefail
ks=$(realpath "${KS:-${CARGO_TARGET_DIR:-target}/release/keysafe}")
W=${W:-/tmp/ksbench-storage}
DURATION=${DURATION:-10s}
# The servers' logs go here (kept after the run when set outside $W).
LOGS=${LOGS:-$W}
BACKENDS=${BACKENDS:-sqlite postgres}
. "$(dirname "$0")/lib/pg.sh"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  stop_pg
  rm -rf "$W"
}

rm -rf "$W"; mkdir -p "$W"; chmod 755 "$W"
trap cleanup EXIT
start_pg
psql_ -c "CREATE DATABASE keysafe OWNER keysafe"
echo "# $(psql_ -c "SELECT string_agg(name || '=' || setting, ' ' ORDER BY name) FROM pg_settings WHERE name IN ('fsync','synchronous_commit','full_page_writes','shared_buffers','max_connections','wal_sync_method')")"

mkdir -p "$LOGS"
for backend in $BACKENDS; do
  port=$(free_port)
  D=$W/d-$backend; H=$W/h-$backend
  case $backend in
    sqlite) storage=() ;;
    postgres) storage=(--storage "postgres://keysafe@127.0.0.1:$pgport/keysafe") ;;
  esac
  "$ks" init --data-dir "$D" --listen "127.0.0.1:$port" "${storage[@]}" >/dev/null
  sed -i 's/^level = "info"/level = "warn"/' "$D/keysafe.toml"
  "$ks" serve --data-dir "$D" 2>"$LOGS/serve-$backend.log" & pids+=($!)
  until "$ks" admin --data-dir "$D" org list >/dev/null 2>&1; do sleep 0.2; done
  S=$("$ks" admin --data-dir "$D" org add bench --json | python3 -c 'import json,sys;print(json.load(sys.stdin)["auth_secret"])')
  KEYSAFE_AUTH=$S "$ks" register --server "https://127.0.0.1:$port" --org bench --home "$H" >/dev/null
  for spec in "get 8" "get 64" "put 8" "put 64"; do
    set -- $spec
    echo "$backend $1 $2 $("$ks" bench --home "$H" --op "$1" --connections "$2" --duration "$DURATION" --json)"
  done
  kill "${pids[-1]}"; wait "${pids[-1]}" || true
done
