#!/usr/bin/env bash
# Seal throughput benchmark: file vs pkcs11 keyring vs pkcs11 per-deposit (SoftHSM2).
set -euo pipefail
ks=${KS:-${CARGO_TARGET_DIR:-target}/release/keysafe}
W=/tmp/ksbench-seal
rm -rf $W; mkdir -p $W
export SOFTHSM2_CONF=$W/softhsm2.conf
mkdir -p $W/tokens
printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' $W > $SOFTHSM2_CONF
softhsm2-util --init-token --free --label bench --so-pin 12345678 --pin 1234 >/dev/null
umask 077; echo 1234 > $W/pin
port=24400
for seal in file pkcs11-keyring pkcs11-per-deposit; do
  port=$((port+1))
  D=$W/d-$seal; H=$W/h-$seal
  case $seal in
    file) flags=() ;;
    pkcs11-keyring) flags=(--seal pkcs11 --pkcs11-token bench --pkcs11-key k-keyring --pkcs11-pin-file $W/pin) ;;
    pkcs11-per-deposit) flags=(--seal pkcs11 --pkcs11-token bench --pkcs11-key k-pd --pkcs11-mode per-deposit --pkcs11-pin-file $W/pin) ;;
  esac
  $ks init --data-dir $D --listen 127.0.0.1:$port "${flags[@]}" >/dev/null
  sed -i 's/^level = "info"/level = "warn"/' $D/keysafe.toml
  $ks serve --data-dir $D 2>$W/serve-$seal.log & pid=$!
  sleep 1
  S=$($ks admin --data-dir $D org add bench --json | python3 -c 'import json,sys;print(json.load(sys.stdin)["auth_secret"])')
  KEYSAFE_AUTH=$S $ks register --server https://127.0.0.1:$port --org bench --home $H >/dev/null
  for spec in "get 8" "get 64" "put 8" "put 64"; do
    set -- $spec
    echo "$seal $1 $2 $($ks bench --home $H --op $1 --connections $2 --duration 10s --json)"
  done
  kill $pid; wait $pid || true
done
