#!/usr/bin/env bash
# The cost of the connection and request limits on the normal path, and what a client sees
# while an attacker holds connections (BENCHMARKS.md, "Edges"). Two release binaries, run in one
# session, interleaved:
#   KS_MAIN  the binary before the limits (main), KS  the binary with them.
# 1. get and put throughput at 64 connections, each binary twice, alternating;
# 2. get latency (8 connections) of a client on 127.0.0.1, alone and while
#    scripts/hold-connections.py holds connections from 127.0.0.2 against KS: 512 tasks (the
#    per-address maximum is 256), then 6000 (more than the global maximum, 4096).
set -euo pipefail
KS_MAIN=${KS_MAIN:?set KS_MAIN to a release binary of main}
KS=${KS:?set KS to a release binary of this branch}
here=$(cd "$(dirname "$0")" && pwd)
ulimit -n "$(ulimit -Hn)"
W=/tmp/ksbench-edges
rm -rf $W; mkdir -p $W
pids=()
trap 'for p in "${pids[@]}"; do kill $p 2>/dev/null || true; done' EXIT

serve() { # NAME BINARY PORT
  local n=$1 ks=$2 port=$3
  $ks init --data-dir $W/$n --listen 127.0.0.1:$port >/dev/null
  sed -i 's/^level = "info"/level = "warn"/' $W/$n/keysafe.toml
  $ks serve --data-dir $W/$n --metrics-listen 127.0.0.1:0 2>$W/$n.log & pids+=($!)
  for _ in $(seq 50); do
    $ks admin --data-dir $W/$n org list >/dev/null 2>&1 && break; sleep 0.2
  done
  local s
  s=$($ks admin --data-dir $W/$n org add bench --json | python3 -c 'import json,sys;print(json.load(sys.stdin)["auth_secret"])')
  KEYSAFE_AUTH=$s $ks register --server https://127.0.0.1:$port --org bench --home $W/$n-home >/dev/null 2>&1
}

bench() { # LABEL BINARY HOME OP CONNECTIONS SECONDS
  $2 bench --home $3 --op $4 --connections $5 --duration ${6}s --json \
    | python3 -c "import json,sys; r=json.load(sys.stdin); print(f\"$1 {r['op']} c={r['connections']}: {r['throughput_per_s']:.0f}/s p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms max {r['max_ms']:.1f} ms errors {r['errors']}\")"
}

serve main $KS_MAIN 24471
serve branch $KS 24472

echo "== normal path, 64 connections, alternating =="
for round in 1 2 3; do
  for op in get put; do
    bench main $KS_MAIN $W/main-home $op 64 10
    bench branch $KS $W/branch-home $op 64 10
  done
done

echo "== a client on 127.0.0.1 while 127.0.0.2 holds connections (get, 8 connections) =="
bench "branch alone" $KS $W/branch-home get 8 10
python3 $here/hold-connections.py 127.0.0.1 24472 127.0.0.2 512 25 & a=$!; sleep 8
bench "branch, 127.0.0.2 at its maximum" $KS $W/branch-home get 8 10
wait $a
python3 $here/hold-connections.py 127.0.0.1 24472 127.0.0.2 6000 25 & a=$!; sleep 8
bench "branch, 127.0.0.2 tries 6000" $KS $W/branch-home get 8 10
wait $a
