#!/usr/bin/env bash
# Instructions the keysafe server executes per request, counted by callgrind (BENCHMARKS.md,
# "Instruction counts under callgrind"). For changes of a few per cent, which the wall-clock
# rows of bench-hotpath.sh (3-5 % apart between runs) cannot separate:
#
#   KS=target/release/keysafe scripts/bench-instructions.sh            # gets
#   KS=target/release/keysafe OP=put N=2000 scripts/bench-instructions.sh
#
# (TRIVIAL, default beside KS under examples/, is needed only to prepare the data directory.)
#
# It prepares a data directory with bench-hotpath.sh (1,000 deposits of 32 B, a registered
# client), starts `KS serve` on it under `valgrind --tool=callgrind`, warms it with 400 requests,
# zeroes the counters, runs N requests (default 3,000) with oha over 8 connections, dumps the
# counters and prints the instructions of the whole process (every thread) per request. Two
# runs of one build agree within about 0.5 %. Compare builds in one session, alternated; each
# build needs its own data directory (W, default /tmp/ksbench-instr-<binary's directory name>),
# since a newer build migrates the database past what an older one opens.
#
# What it is not: a picture of where real time goes. Under valgrind SHA-256 runs without the
# CPU's SHA extensions (a quarter of the count, about 2 % of real time), and at about 800
# requests a second reads miss the cache of current versions (entries older than five seconds)
# far more often than at full speed. Needs valgrind (`apt-get install valgrind`) and oha.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
KS=${KS:?set KS to the keysafe binary to measure}
# Only to prepare the data directory (bench-hotpath.sh starts it): cargo's layout by default.
TRIVIAL=${TRIVIAL:-$(dirname "$KS")/examples/trivial_mtls}
OP=${OP:-get}
N=${N:-3000}
W=${W:-/tmp/ksbench-instr-$(basename "$(dirname "$KS")")}
OHA=${OHA:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}
command -v callgrind_control >/dev/null || { echo "valgrind not found: apt-get install valgrind" >&2; exit 1; }
[ -x "$OHA" ] || { echo "oha not found: cargo install oha --locked" >&2; exit 1; }
[ -x "$TRIVIAL" ] || { echo "set TRIVIAL to the trivial_mtls example (cargo build --release -p keysafe-server --example trivial_mtls)" >&2; exit 1; }
case $OP in get | put) ;; *) echo "OP must be get or put" >&2; exit 2 ;; esac

if [ ! -f "$W/home/token" ]; then
  # One short row is enough: the data directory and the client are what is kept.
  KEEP=1 KS=$KS TRIVIAL=$TRIVIAL W=$W DURATION=1 ROWS=baseline \
    "$here/bench-hotpath.sh" >/dev/null
fi
D=$W/data H=$W/home
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
sed -i "s/^listen = .*/listen = \"127.0.0.1:$port\"/" "$D/keysafe.toml"
rm -f "$W"/callgrind.out.*
valgrind --tool=callgrind --callgrind-out-file="$W/callgrind.out.%p" \
  "$KS" serve --data-dir "$D" --metrics-listen 127.0.0.1:0 >/dev/null 2>"$W/valgrind.log" &
vg=$!
trap 'kill "$vg" 2>/dev/null || true' EXIT
until curl -ksf -o /dev/null "https://127.0.0.1:$port/v1/health"; do
  kill -0 "$vg" 2>/dev/null || { cat "$W/valgrind.log" >&2; exit 1; }
  sleep 0.5
done

args=(--no-tui -c 8 --insecure --cert "$H/client.crt" --key "$H/client.key"
      -H "x-keysafe-token: $(cat "$H/token")")
if [ "$OP" = put ]; then
  head -c 32 /dev/urandom > "$W/payload"
  args+=(-m PUT -D "$W/payload" -H 'content-type: application/octet-stream')
fi
url="https://127.0.0.1:$port/v1/deposits/bench/key-000[0-9]{3}"
"$OHA" "${args[@]}" -n 400 --rand-regex-url "$url" >/dev/null
callgrind_control -z "$vg" >/dev/null 2>&1
"$OHA" "${args[@]}" -n "$N" --rand-regex-url "$url" > "$W/oha.txt"
callgrind_control -d "$vg" >/dev/null 2>&1
kill "$vg"; wait "$vg" 2>/dev/null || true
trap - EXIT

# The dump requested above is part 1 of the process's output; the file without a part number is
# the rest of its life (shutdown), not counted.
total=$(awk '/^totals:/ {s += $2} END {print s}' "$W"/callgrind.out.*.1)
answered=$(awk '/Success rate/ {print $3}' "$W/oha.txt")
echo "$(basename "$(dirname "$KS")")/$(basename "$KS") $OP: $total instructions over $N requests (success rate $answered): $((total / N)) per request"
