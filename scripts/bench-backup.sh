#!/usr/bin/env bash
# Backup create / verify / restore: time and peak resident memory, on SQLite and on a local
# PostgreSQL 15, in one run. For each backend: init, serve, seed N deposits of 64 bytes
# (`keysafe bench --op get --keys N`), then
#   - `admin --data-dir D backup create` (on the data directory, server running): the CLI's peak RSS
#   - `admin --home D/admin backup create` (over the API): the CLI's and the server's peak RSS
#     (the server's peak is reset through /proc/PID/clear_refs just before)
#   - `backup verify`
#   - `restore --storage OTHER` into the other backend (SQLite -> PostgreSQL, PostgreSQL -> SQLite)
# Peak RSS from /usr/bin/time (%M) and /proc/PID/status (VmHWM). Everything lives under $W and
# is removed at the end (the seeded databases included).
set -euo pipefail
ks=$(realpath "${KS:-${CARGO_TARGET_DIR:-target}/release/keysafe}")
W=${W:-/tmp/ksbench-backup}
N=${N:-100000}
BACKENDS=${BACKENDS:-sqlite postgres}
. "$(dirname "$0")/lib/pg.sh"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  stop_pg
  rm -rf "$W"
}
# Runs a command, printing "LABEL: S s, RSS MB".
measure() {
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$W/time" "$@" >/dev/null
  read -r secs kb <"$W/time"
  echo "$label: ${secs} s, peak RSS $((kb / 1024)) MB"
}

rm -rf "$W"; mkdir -p "$W"; chmod 755 "$W"
trap cleanup EXIT
start_pg
for db in keysafe restored; do psql_ -c "CREATE DATABASE $db OWNER keysafe"; done
echo "# keysafe $ks, N=$N, load average $(cut -d' ' -f1-3 /proc/loadavg)"

for backend in $BACKENDS; do
  port=$(free_port)
  D=$W/d-$backend; H=$W/h-$backend
  case $backend in
    sqlite)
      storage=()
      other=(--storage "postgres://keysafe@127.0.0.1:$pgport/restored") ;;
    postgres)
      storage=(--storage "postgres://keysafe@127.0.0.1:$pgport/keysafe")
      other=(--storage keysafe.db) ;;
  esac
  "$ks" init --data-dir "$D" --listen "127.0.0.1:$port" "${storage[@]}" >/dev/null
  sed -i 's/^level = "info"/level = "warn"/' "$D/keysafe.toml"
  "$ks" serve --data-dir "$D" 2>"$W/serve-$backend.log" & pids+=($!)
  spid=${pids[-1]}
  until "$ks" admin --data-dir "$D" org list >/dev/null 2>&1; do sleep 0.2; done
  S=$("$ks" admin --data-dir "$D" org add bench --json | python3 -c 'import json,sys;print(json.load(sys.stdin)["auth_secret"])')
  KEYSAFE_AUTH=$S "$ks" register --server "https://127.0.0.1:$port" --org bench --home "$H" >/dev/null
  R=$("$ks" backup keygen -o "$W/id-$backend.txt")
  t0=$(date +%s.%N)
  "$ks" bench --home "$H" --op get --connections 8 --keys "$N" --duration 1s --warmup 0s --json >/dev/null
  echo "$backend seed $N deposits: $(python3 -c "print(round($(date +%s.%N)-$t0,1))") s"
  measure "$backend admin --data-dir backup create" \
    "$ks" admin --data-dir "$D" backup create --recipient "$R" --include-root-key --include-admin-identity -o "$W/b-$backend.age"
  echo "$backend backup size: $(stat -c %s "$W/b-$backend.age") bytes"
  echo 5 > "/proc/$spid/clear_refs"
  before=$(awk '/VmRSS/{print int($2/1024)}' "/proc/$spid/status")
  measure "$backend admin --home backup create (over the API; CLI)" \
    "$ks" admin --home "$D/admin" backup create --recipient "$R" -o "$W/api-$backend.age"
  echo "$backend server during the API backup: RSS before $before MB, peak $(awk '/VmHWM/{print int($2/1024)}' "/proc/$spid/status") MB"
  measure "$backend backup verify" "$ks" backup verify "$W/b-$backend.age" --identity "$W/id-$backend.txt"
  kill "$spid"; wait "$spid" || true
  measure "$backend restore into ${other[1]%%:*}" \
    "$ks" restore --from "$W/b-$backend.age" --identity "$W/id-$backend.txt" --data-dir "$W/r-$backend" \
      --listen "127.0.0.1:$(free_port)" "${other[@]}"
  rm -rf "$D" "$W/r-$backend" "$W"/*.age
done
