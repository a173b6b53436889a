#!/usr/bin/env bash
# Backup and restore time for 100,000 deposits (file seal, release build).
set -euo pipefail
ks=${KS:-${CARGO_TARGET_DIR:-target}/release/keysafe}
W=/tmp/ksbench-backup
rm -rf $W; mkdir -p $W
port=24450
D=$W/d; H=$W/h
$ks init --data-dir $D --listen 127.0.0.1:$port >/dev/null
sed -i 's/^level = "info"/level = "warn"/' $D/keysafe.toml
$ks serve --data-dir $D 2>$W/serve.log & pid=$!
sleep 1
S=$($ks admin --data-dir $D org add bench --json | python3 -c 'import json,sys;print(json.load(sys.stdin)["auth_secret"])')
KEYSAFE_AUTH=$S $ks register --server https://127.0.0.1:$port --org bench --home $H >/dev/null 2>&1
t() { python3 -c 'import time;print(time.time())'; }
t0=$(t)
$ks bench --home $H --op get --connections 8 --keys 100000 --duration 1s --warmup 0s --json >/dev/null
t1=$(t); echo "seed: $(python3 -c "print(round($t1-$t0,1))") s"
R=$($ks backup keygen -o $W/id.txt)
ls -la $D/keysafe.db | awk '{print "db bytes:", $5}'
t0=$(t)
$ks admin --data-dir $D backup create --recipient $R --include-root-key -o $W/b.age
t1=$(t); echo "backup create: $(python3 -c "print(round($t1-$t0,2))") s"
ls -la $W/b.age | awk '{print "backup bytes:", $5}'
# during load as well: a put load running while the backup is taken
$ks bench --home $H --op put --connections 8 --keys 100000 --duration 15s --warmup 0s --json > $W/put-during.json &
bp=$!
sleep 4
t0=$(t)
$ks admin --data-dir $D backup create --recipient $R --include-root-key -o $W/b2.age
t1=$(t); echo "backup create under put load: $(python3 -c "print(round($t1-$t0,2))") s"
wait $bp; echo "put load during backup: $(cat $W/put-during.json)"
t0=$(t)
$ks backup verify $W/b.age --identity $W/id.txt >/dev/null
t1=$(t); echo "verify: $(python3 -c "print(round($t1-$t0,2))") s"
kill $pid; wait $pid || true
t0=$(t)
$ks restore --from $W/b.age --identity $W/id.txt --data-dir $W/r --listen 127.0.0.1:24451 --hostname restored.example >/dev/null
t1=$(t); echo "restore: $(python3 -c "print(round($t1-$t0,2))") s"
t0=$(t)
$ks serve --data-dir $W/r 2>$W/serve2.log & pid=$!
for i in $(seq 1 200); do curl -sk https://127.0.0.1:24451/v1/health | grep -q '"ok"' && break; sleep 0.05; done
t1=$(t); echo "restored server healthy after: $(python3 -c "print(round($t1-$t0,2))") s"
kill $pid; wait $pid || true
