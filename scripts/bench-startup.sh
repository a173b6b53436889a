#!/usr/bin/env bash
# Start-up to healthy of an existing data directory (for example one seeded by
# `keysafe bench --op seed`; the server must not be running):
#   scripts/bench-startup.sh KEYSAFE_BINARY DATA_DIR
# It waits until the port is free, starts `keysafe serve`, polls
# /v1/health every 20 ms until this process answers "ok", prints the time and resident memory;
# then leaves it 8 s (the start-up re-wrap pass runs in the background) and prints the slow
# statements it logged (sqlx logged statements over 1 s; since the SQLite store moved to
# rusqlite neither store logs them, so that list stays empty); stops the server.
set -euo pipefail
ks=$1 dir=$2
addr=$(grep -m1 '^listen' "$dir/keysafe.toml" | sed 's/.*"\(.*\)"/\1/')
url="https://$addr"
while curl -sk -m 1 "$url/v1/health" >/dev/null 2>&1; do sleep 0.2; done
t0=$(date +%s.%N)
"$ks" serve --data-dir "$dir" 2>"$dir.serve.log" & pid=$!
until [[ "$(curl -skf -m 1 "$url/v1/health" 2>/dev/null || true)" == *'"status":"ok"'* ]]; do
  kill -0 $pid || { echo "the server exited"; cat "$dir.serve.log"; exit 1; }
  sleep 0.02
done
t1=$(date +%s.%N)
rss=$(awk '/VmRSS/{print int($2/1024)}' /proc/$pid/status)
sleep 8
echo "start-up to healthy: $(python3 -c "print(round($t1-$t0,3))") s, RSS ${rss} MB; slow statements in the first 8 s: $(grep -o 'elapsed=[0-9.]*s' "$dir.serve.log" | tr '\n' ' ')"
kill $pid; wait $pid || true
