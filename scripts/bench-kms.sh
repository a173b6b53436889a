#!/usr/bin/env bash
# The Hadoop KMS gateway under load from a separate load generator (BENCHMARKS.md, "The KMS
# gateway under oha"). One command:
#
#   KS=<release keysafe> scripts/bench-kms.sh
#
# Starts keysafe (`serve`, default configuration) and one gateway (`keysafe kms`, pseudo
# authentication on 127.0.0.1, plain HTTP, its audit log on, default caches and EEK queue), as
# they run in production: two processes. Creates one key through the gateway, then runs oha
# with CONNECTIONS keep-alive connections for DURATION seconds per row:
#
#   generate  GET  /kms/v1/key/k1/_eek?eek_op=generate&num_keys=1 (Hadoop's generate EEK)
#   decrypt   POST /kms/v1/keyversion/<v>/_eek?eek_op=decrypt     (one EEK, decrypted again)
#   current   GET  /kms/v1/key/k1/_currentversion                  (the key cache, hit)
#
# Every request names its caller (`user.name=bench`), as Hadoop's pseudo authentication does.
# Prints one table with requests/s, p50, p99 and errors, the machine's load average per row,
# and the resident memory of both processes.
#
# Environment: KS (the keysafe binary; default: build release), CONNECTIONS (64), DURATION
# (10), ROWS ("generate decrypt current"), CACHE=off turns the gateway's key caches off (every
# row then reads its key from keysafe: `CACHE=off ROWS=current CONNECTIONS=1` is the cost of a
# key-cache miss), KEEP=1 keeps the work directory, W (work directory, default /tmp/ksbench-kms).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
CONNECTIONS=${CONNECTIONS:-64}
SECONDS_PER_ROW=${DURATION:-10}
ROWS=${ROWS:-"generate decrypt current"}
W=${W:-/tmp/ksbench-kms}
OHA=${OHA:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}
[ -x "$OHA" ] || { echo "oha not found: cargo install oha --locked" >&2; exit 1; }
if [ -z "${KS:-}" ]; then
  (cd "$root" && cargo build --release --locked -p keysafe-cli) >&2
  KS=${CARGO_TARGET_DIR:-$root/target}/release/keysafe
fi

ulimit -n "$(ulimit -Hn)"
rm -rf "$W"; mkdir -p "$W"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$W"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
rss_mb() { awk '/^VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
load() { cut -d' ' -f1-3 /proc/loadavg; }

PORT=$(free_port) KPORT=$(free_port)
D=$W/data H=$W/kms-home
"$KS" init --data-dir "$D" --listen "127.0.0.1:$PORT" >/dev/null
"$KS" serve --data-dir "$D" >/dev/null 2>>"$W/serve.log" & pids+=($!); SERVER=$!
until curl -ksf -o /dev/null "https://127.0.0.1:$PORT/v1/health"; do sleep 0.05; done
S=$("$KS" admin --data-dir "$D" org add hadoop --json | python3 -c 'import json,sys;print(json.load(sys.stdin)["auth_secret"])')
KEYSAFE_AUTH=$S "$KS" register --server "https://127.0.0.1:$PORT" --org hadoop --name kms-1 \
  --home "$H" >/dev/null 2>&1
cat > "$W/kms.toml" <<EOF
listen = "127.0.0.1:$KPORT"
key_admins = "bench"
audit_log = "$W/kms-audit.log"
EOF
if [ "${CACHE:-on}" = off ]; then printf '[cache]\nenable = false\n' >> "$W/kms.toml"; fi
"$KS" kms --home "$H" --config "$W/kms.toml" >/dev/null 2>>"$W/kms.log" & pids+=($!); GATEWAY=$!
K="http://127.0.0.1:$KPORT/kms/v1"
until curl -sf -o /dev/null "$K/keys/names?user.name=bench"; do sleep 0.05; done
curl -sf -o /dev/null -X POST -H 'content-type: application/json' \
  -d '{"name":"k1","cipher":"AES/CTR/NoPadding","length":128}' "$K/keys?user.name=bench"
# One EEK to decrypt again and again.
curl -sf "$K/key/k1/_eek?eek_op=generate&num_keys=1&user.name=bench" > "$W/eek.json"
python3 - "$W/eek.json" "$W/decrypt-body.json" "$W/version" <<'EOF'
import json, sys
e = json.load(open(sys.argv[1]))[0]
json.dump({"name": "k1", "iv": e["iv"], "material": e["encryptedKeyVersion"]["material"]},
          open(sys.argv[2], "w"))
open(sys.argv[3], "w").write(e["versionName"])
EOF
V=$(python3 -c 'import sys,urllib.parse;print(urllib.parse.quote(open(sys.argv[1]).read()))' "$W/version")

common=(--no-tui --output-format json -z "${SECONDS_PER_ROW}s" -c "$CONNECTIONS")
row() { # NAME -> prints JSON from oha
  case $1 in
    generate) "$OHA" "${common[@]}" "$K/key/k1/_eek?eek_op=generate&num_keys=1&user.name=bench" ;;
    decrypt)  "$OHA" "${common[@]}" -m POST -H 'content-type: application/json' \
                -D "$W/decrypt-body.json" "$K/keyversion/$V/_eek?eek_op=decrypt&user.name=bench" ;;
    current)  "$OHA" "${common[@]}" "$K/key/k1/_currentversion?user.name=bench" ;;
  esac
}

: > "$W/rows.jsonl"
for r in $ROWS; do
  l=$(load)
  row "$r" > "$W/$r.json"
  python3 "$here/lib/oha-row.py" "$r" "$W/$r.json" "$l" >> "$W/rows.jsonl"
done

python3 - "$W/rows.jsonl" <<EOF
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"keysafe KMS gateway: {$CONNECTIONS} connections, {$SECONDS_PER_ROW} s per row, pseudo authentication, plain HTTP, key caches ${CACHE:-on}")
print()
print("| row | requests/s | p50 ms | p99 ms | errors | load avg (1/5/15 min) |")
print("|---|---:|---:|---:|---:|---|")
for r in rows:
    print(f"| {r['row']} | {r['rps']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['errors']} | {r['load']} |")
for r in rows:
    if r["errors"]:
        print(f"{r['row']}: status codes {r['codes']}, errors {r['errs']}")
print()
print(f"resident memory after the rows: keysafe {$(rss_mb "$SERVER")} MB, gateway {$(rss_mb "$GATEWAY")} MB")
EOF
