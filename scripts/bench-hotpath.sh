#!/usr/bin/env bash
# The hot path against the ceiling (BENCHMARKS.md, "The hot path"). One command:
#
#   scripts/bench-hotpath.sh                       # build release, run, print the table
#   KEYS=1000000 scripts/bench-hotpath.sh          # the scale run (seeding takes minutes)
#
# It builds release, starts the trivial handler (examples/trivial_mtls.rs: keysafe's own TLS
# configuration, client-certificate verifier and keysafe-net connection path, no middleware, no
# database) and keysafe (`serve`, default configuration: audit trail on, SQLite, log level info),
# registers a client, seeds KEYS deposits of SIZE bytes through the server (`keysafe bench --op
# seed`: concurrent durable puts), then runs oha with CONNECTIONS keep-alive connections for
# DURATION seconds per row, presenting the client's certificate and its sequenced token:
#
#   trivial   GET /?a=fingerprint on the trivial handler (the ceiling of the run)
#   baseline  GET /?a=fingerprint on keysafe (its TLS, HTTP and middleware; no database)
#   get       GET /v1/deposits/bench/key-NNNNNN, a random key per request
#   put       PUT of SIZE bytes to a random key of the KEYS (durable before the answer)
#   put-hot   PUT of SIZE bytes to one key
#   get-paced the get row at a fixed offered rate of RATE requests a second (oha -q with
#             --latency-correction), not at saturation: its p99 is the latency at that load, which
#             the saturated rows cannot show; not in the default ROWS, no ratio
#
# and prints one table with each row's ratio to the trivial handler of the same run and the
# serving process's CPU time per answered request (user + system, from /proc; it moves much less
# than requests/s when oha and the server share a noisy machine), plus start-up to healthy, resident memory (idle after start, after seeding, after the runs) and the
# machine's load average. The one change from the default configuration: clients.token_rotation
# is 24 h, because oha sends one fixed token and a rotation in the middle of a row would turn
# every later request of that row into a re-issue (see the section in BENCHMARKS.md).
#
# Environment: KS (the keysafe binary served; default: build release), KS_CLIENT (the keysafe
# binary that seeds, default KS: set it to compare an older server that lacks `bench --op
# seed`), TRIVIAL (the example binary),
# STORAGE (a [storage] url for `keysafe init --storage`, default SQLite in the data directory;
# `postgres` starts a throwaway PostgreSQL 15 cluster under W, see scripts/lib/pg.sh),
# KEYS (1000), SIZE (32), CONNECTIONS (64), DURATION (seconds per row, 10), ROWS ("trivial baseline get put
# put-hot"), RATE (requests a second of get-paced, 8000), KEEP=1 keeps the work directory, W (work
# directory, default /tmp/ksbench-hotpath).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
KEYS=${KEYS:-1000}
SIZE=${SIZE:-32}
CONNECTIONS=${CONNECTIONS:-64}
SECONDS_PER_ROW=${DURATION:-10}
RATE=${RATE:-8000}
[[ $RATE =~ ^[1-9][0-9]*$ ]] || { echo "RATE must be a whole number of requests a second" >&2; exit 2; }
ROWS=${ROWS:-"trivial baseline get put put-hot"}
W=${W:-/tmp/ksbench-hotpath}
OHA=${OHA:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}
[ -x "$OHA" ] || { echo "oha not found: cargo install oha --locked" >&2; exit 1; }

if [ -z "${KS:-}" ] || [ -z "${TRIVIAL:-}" ]; then
  # Two builds: an example pulls in dev-dependency features that the keysafe binary must not get.
  (cd "$root" && cargo build --release --locked -p keysafe-cli && \
    cargo build --release --locked -p keysafe-server --example trivial_mtls) >&2
  target=${CARGO_TARGET_DIR:-$root/target}
  KS=${KS:-$target/release/keysafe}
  TRIVIAL=${TRIVIAL:-$target/release/examples/trivial_mtls}
fi

ulimit -n "$(ulimit -Hn)"
rm -rf "$W"; mkdir -p "$W"; chmod 755 "$W"
pids=()
stop_pg() { :; }
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  stop_pg
  [ -n "${KEEP:-}" ] || rm -rf "$W"
}
trap cleanup EXIT
if [ "${STORAGE:-}" = postgres ]; then
  . "$here/lib/pg.sh"
  start_pg >&2
  psql_ -c "CREATE DATABASE keysafe OWNER keysafe"
  STORAGE="postgres://keysafe@127.0.0.1:$pgport/keysafe"
fi

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }  # utime + stime
rss_mb() { awk '/^VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
load() { cut -d' ' -f1-3 /proc/loadavg; }

PORT=$(free_port)
D=$W/data H=$W/home
init_args=(--data-dir "$D" --listen "127.0.0.1:$PORT")
[ -n "${STORAGE:-}" ] && init_args+=(--storage "$STORAGE")
"$KS" init "${init_args[@]}" >/dev/null
sed -i 's/^token_rotation = .*/token_rotation = "24h"/' "$D/keysafe.toml"

# Start-up to healthy: from exec to the first 200 from /v1/health.
health() { curl -ksf -o /dev/null "https://127.0.0.1:$PORT/v1/health"; }
start_server() { # sets SERVER and START_MS
  local t0 t1
  t0=$(date +%s%N)
  "$KS" serve --data-dir "$D" --metrics-listen 127.0.0.1:0 >/dev/null 2>>"$W/serve.log" & pids+=($!); SERVER=$!
  until health; do sleep 0.01; done
  t1=$(date +%s%N)
  START_MS=$(( (t1 - t0) / 1000000 ))
}
start_server
FIRST_START_MS=$START_MS
sleep 1
RSS_IDLE=$(rss_mb "$SERVER")

S=$("$KS" admin --data-dir "$D" org add bench --json | python3 -c 'import json,sys;print(json.load(sys.stdin)["auth_secret"])')
KEYSAFE_AUTH=$S "$KS" register --server "https://127.0.0.1:$PORT" --org bench --home "$H" >/dev/null 2>&1

"$TRIVIAL" "$D" 127.0.0.1:0 > "$W/trivial.out" & pids+=($!); TRIVIAL_PID=$!
until grep -q listening "$W/trivial.out" 2>/dev/null; do sleep 0.05; done
TRIVIAL_ADDR=$(awk '/listening/ {print $3}' "$W/trivial.out")

KS_CLIENT=${KS_CLIENT:-$KS}
SEED=$("$KS_CLIENT" bench --home "$H" --op seed --keys "$KEYS" --size "$SIZE" --connections 64 --json)
RSS_SEEDED=$(rss_mb "$SERVER")
# Start-up again, now with KEYS deposits and their audit entries in the database.
kill -TERM "$SERVER"; wait "$SERVER" 2>/dev/null || true
start_server
RESTART_MS=$START_MS
sleep 1
RSS_RESTART=$(rss_mb "$SERVER")

TOKEN=$(cat "$H/token")
head -c "$SIZE" /dev/urandom > "$W/payload"
digits=${#KEYS}; digits=$(( digits > 6 ? digits : 6 ))
last=$(( KEYS - 1 ))
if [ "$KEYS" -eq 1000000 ]; then keyre='[0-9]{6}'
elif [ "$KEYS" -eq 1000 ]; then keyre='000[0-9]{3}'
else echo "KEYS must be 1000 or 1000000 (the key pattern is a regular expression)" >&2; exit 2; fi
url="https://127.0.0.1:$PORT/v1/deposits/bench/key-$keyre"  # oha: a dot is literal here
common=(--no-tui --output-format json -z "${SECONDS_PER_ROW}s" -c "$CONNECTIONS" --insecure
        --cert "$H/client.crt" --key "$H/client.key")
auth=(-H "x-keysafe-token: $TOKEN")

row() { # NAME -> prints JSON from oha
  case $1 in
    trivial)  "$OHA" "${common[@]}" "https://$TRIVIAL_ADDR/?a=fingerprint" ;;
    baseline) "$OHA" "${common[@]}" "https://127.0.0.1:$PORT/?a=fingerprint" ;;
    get)      "$OHA" "${common[@]}" "${auth[@]}" --rand-regex-url "$url" ;;
    get-paced) "$OHA" "${common[@]}" "${auth[@]}" -q "$RATE" --latency-correction \
                --rand-regex-url "$url" ;;
    put)      "$OHA" "${common[@]}" "${auth[@]}" -m PUT -D "$W/payload" \
                -H 'content-type: application/octet-stream' --rand-regex-url "$url" ;;
    put-hot)  "$OHA" "${common[@]}" "${auth[@]}" -m PUT -D "$W/payload" \
                -H 'content-type: application/octet-stream' \
                "https://127.0.0.1:$PORT/v1/deposits/bench/key-000000" ;;
    *)        echo "unknown row: $1" >&2; return 2 ;;
  esac
}

: > "$W/rows.jsonl"
for r in $ROWS; do
  l=$(load)
  served=$SERVER; [ "$r" = trivial ] && served=$TRIVIAL_PID
  c0=$(cpu_ticks "$served")
  row "$r" > "$W/$r.json"
  c1=$(cpu_ticks "$served")
  python3 "$here/lib/oha-row.py" "$r" "$W/$r.json" "$l" $((c1 - c0)) >> "$W/rows.jsonl"
done
RSS_AFTER=$(rss_mb "$SERVER")

python3 - "$W/rows.jsonl" <<EOF
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
base = next((r["rps"] for r in rows if r["row"] == "trivial"), None)
print(f"keysafe hot path: {$KEYS} deposits of {$SIZE} B, {$CONNECTIONS} connections, {$SECONDS_PER_ROW} s per row")
print()
print("| row | requests/s | p50 ms | p99 ms | errors | vs trivial | server CPU µs/request | load avg (1/5/15 min) |")
print("|---|---:|---:|---:|---:|---:|---:|---|")
for r in rows:
    ratio = f"{r['rps'] / base:.2f}" if base and r["row"] != "get-paced" else ""
    cpu = f"{r['cpu_us']:.1f}" if r.get("cpu_us") is not None else ""
    print(f"| {r['row']} | {r['rps']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['errors']} | {ratio} | {cpu} | {r['load']} |")
for r in rows:
    if r["errors"]:
        print(f"{r['row']}: status codes {r['codes']}, errors {r['errs']}")
seed = json.loads('''$SEED''')
print()
print(f"seeding: {seed['stored']:,} stored ({seed['existing']:,} there already) in {seed['seconds']:.1f} s, {seed['per_second']:,.0f}/s over {seed['connections']} connections")
print(f"start-up to healthy: {$FIRST_START_MS} ms empty, {$RESTART_MS} ms with {$KEYS} deposits")
print(f"resident memory: {$RSS_IDLE} MB idle after start, {$RSS_SEEDED} MB after seeding, {$RSS_RESTART} MB idle after the restart, {$RSS_AFTER} MB after the rows")
EOF
