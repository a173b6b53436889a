#!/usr/bin/env bash
# Get and put throughput through one keysafe node against two nodes on one PostgreSQL, in one
# run on one machine. Node A (127.0.0.2) initialises the database, node B (127.0.0.3) joins it
# with a copy of the root key. Three client homes: h1 and h2 talk to node A only, h3 to node B
# only. Each row runs two `keysafe bench` processes at once, CONNECTIONS each:
#   one node:  h1 and h2, both through node A
#   two nodes: h1 through node A and h3 through node B
# so the load and the number of clients are the same and only the number of nodes differs.
# The figure is the sum of both processes' throughput. On a small machine the nodes, the
# database and the load generators share the same cores: read the ratio, not the absolute.
set -euo pipefail
ks=$(realpath "${KS:-${CARGO_TARGET_DIR:-target}/release/keysafe}")
W=${W:-/tmp/ksbench-cluster}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-16}
KEYS=${KEYS:-1000}
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
url="postgres://keysafe@127.0.0.1:$pgport/keysafe"
echo "# keysafe $ks; $CONNECTIONS connections per bench process, $DURATION per row, $KEYS keys; load average $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores"

pa=$(free_port); pb=$(free_port)
"$ks" init --data-dir "$W/a" --listen "127.0.0.2:$pa" --storage "$url" >/dev/null
install -m 600 "$W/a/root.key" "$W/root-copy.key"
"$ks" init --data-dir "$W/b" --listen "127.0.0.3:$pb" --storage "$url" --join --root-key-file "$W/root-copy.key" >/dev/null
for n in a b; do
  sed -i 's/^level = "info"/level = "warn"/' "$W/$n/keysafe.toml"
  "$ks" serve --data-dir "$W/$n" 2>"$W/serve-$n.log" & pids+=($!)
done
until "$ks" admin --data-dir "$W/a" org list >/dev/null 2>&1; do sleep 0.2; done
S=$("$ks" admin --data-dir "$W/a" org add bench --json | python3 -c 'import json,sys;print(json.load(sys.stdin)["auth_secret"])')
register() { KEYSAFE_AUTH=$S "$ks" register --server "$1" --org bench --home "$2" >/dev/null 2>&1; }
register "https://127.0.0.2:$pa" "$W/h1"
register "https://127.0.0.2:$pa" "$W/h2"
until curl -skf "https://127.0.0.3:$pb/v1/health" >/dev/null; do sleep 0.2; done
register "https://127.0.0.3:$pb" "$W/h3"
# Each home seeds its own keys once (a 1 s get run), so the rows measure reads of existing keys.
for h in h1 h2 h3; do
  "$ks" bench --home "$W/$h" --op get --connections 8 --keys "$KEYS" --duration 1s --warmup 0s --json >/dev/null
done

# Runs two bench processes at once; prints the sum of their throughput and their p50s.
pair() {
  local op=$1 x=$2 y=$3
  "$ks" bench --home "$W/$x" --op "$op" --connections "$CONNECTIONS" --keys "$KEYS" --duration "$DURATION" --json >"$W/r1" &
  local p1=$!
  "$ks" bench --home "$W/$y" --op "$op" --connections "$CONNECTIONS" --keys "$KEYS" --duration "$DURATION" --json >"$W/r2" &
  local p2=$!
  wait "$p1" "$p2"
  python3 - "$W/r1" "$W/r2" <<'PY'
import json, sys
r = [json.load(open(p)) for p in sys.argv[1:]]
print(f"{sum(x['throughput_per_s'] for x in r):.0f}/s (p50 {r[0]['p50_ms']:.2f} / {r[1]['p50_ms']:.2f} ms, errors {sum(x['errors'] for x in r)})")
PY
}
for op in get put; do
  one=$(pair "$op" h1 h2)
  two=$(pair "$op" h1 h3)
  echo "$op  one node: $one"
  echo "$op  two nodes: $two"
  python3 -c "import sys; a=float('$one'.split('/')[0]); b=float('$two'.split('/')[0]); print(f'$op  two nodes / one node: {b/a:.2f}')"
done
