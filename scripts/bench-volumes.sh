#!/usr/bin/env bash
# Throughput of a keysafe volume against the stock gocryptfs and the plain directory, on the
# same machine in one run (BENCHMARKS.md, "keysafe volumes").
#
#   scripts/bench-volumes.sh [KEYSAFE_BINARY] [WORK_DIR]
#
# Needs root, fuse3, gocryptfs, python3. For each target (plain directory, gocryptfs,
# keysafe volume mount) it measures:
#   - sequential write of 1 GiB in 1 MiB blocks (dd, then fsync),
#   - sequential read of it (dd; the file system's own cache is empty after a remount, the
#     backing file may be in the host page cache: this measures FUSE and crypto, not the disk),
#   - 10,000 files of 4 KiB: create and write each, then read each back (python3).
# Each measurement is repeated ROUNDS times (default 3), the targets in a rotated order each
# round, and the median is reported: the machines are shared and a single figure is noise.
# Prints one line per measurement and a table of medians and ratios.
set -euo pipefail
KS=${1:-target/release/keysafe}
W=${2:-/tmp/keysafe-volume-bench}
PORT=${PORT:-24381}
ROUNDS=${ROUNDS:-3}
KS=$(readlink -f "$KS")

cleanup() {
    for m in "$W/plain-mnt" "$W/go-mnt" "$W/ks-mnt"; do
        mountpoint -q "$m" 2>/dev/null && fusermount3 -u "$m" 2>/dev/null || true
    done
    [ -f "$W/serve.pid" ] && kill "$(cat "$W/serve.pid")" 2>/dev/null || true
}
trap cleanup EXIT
cleanup
rm -rf "$W"
mkdir -p "$W"/{go-cipher,go-mnt,ks-mnt,plain}

# A keysafe server and a registered client.
"$KS" serve --data-dir "$W/data" --listen 127.0.0.1:$PORT --metrics-listen 127.0.0.1:0 \
    >"$W/serve.log" 2>&1 &
echo $! >"$W/serve.pid"
for _ in $(seq 1 100); do
    curl -sk "https://127.0.0.1:$PORT/v1/health" >/dev/null && break
    sleep 0.2
done
"$KS" admin --data-dir "$W/data" org add bench --json |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["auth_secret"], end="")' >"$W/secret"
"$KS" register --server "https://127.0.0.1:$PORT" --org bench --auth-file "$W/secret" \
    --home "$W/home" >/dev/null 2>&1
export KEYSAFE_HOME="$W/home"

# The keysafe volume and a gocryptfs volume with the same (default) scrypt cost.
"$KS" volume prepare "$W/ks-cipher" "$W/ks-mnt" --name bench >/dev/null
"$KS" get volume/bench | gocryptfs -init -q -passfile /dev/stdin "$W/go-cipher"

mount_target() {
    case $1 in
    plain) : ;;
    gocryptfs) "$KS" get volume/bench | gocryptfs -q -passfile /dev/stdin "$W/go-cipher" "$W/go-mnt" 2>>"$W/gocryptfs.log" ;;
    keysafe) "$KS" volume mount bench >/dev/null ;;
    esac
}
umount_target() {
    case $1 in
    plain) : ;;
    gocryptfs) fusermount3 -u "$W/go-mnt" ;;
    keysafe) "$KS" volume umount bench >/dev/null ;;
    esac
}
dir_of() {
    case $1 in
    plain) echo "$W/plain" ;;
    gocryptfs) echo "$W/go-mnt" ;;
    keysafe) echo "$W/ks-mnt" ;;
    esac
}

# Seconds taken by a command.
secs() {
    local t0 t1
    t0=$(date +%s.%N)
    "$@"
    t1=$(date +%s.%N)
    python3 -c "print(f'{$t1 - $t0:.3f}')"
}

small_files() {
    python3 - "$1" "$2" <<'EOF'
import os, sys, time
d, phase = sys.argv[1], sys.argv[2]
buf = os.urandom(4096)
n = 10_000
os.makedirs(os.path.join(d, "small"), exist_ok=True)
if phase == "write":
    for i in range(n):
        with open(os.path.join(d, "small", f"f{i:05}"), "wb") as f:
            f.write(buf)
else:
    total = 0
    for i in range(n):
        with open(os.path.join(d, "small", f"f{i:05}"), "rb") as f:
            total += len(f.read())
    assert total == n * 4096, total
EOF
}

declare -A R
targets=(plain gocryptfs keysafe)
for round in $(seq 1 "$ROUNDS"); do
    for i in 0 1 2; do
        t=${targets[$(( (i + round) % 3 ))]}
        mount_target $t
        d=$(dir_of $t)
        w=$(secs dd if=/dev/zero of="$d/big" bs=1M count=1024 conv=fsync status=none)
        umount_target $t
        mount_target $t
        r=$(secs dd if="$d/big" of=/dev/null bs=1M status=none)
        rm -f "$d/big"
        sw=$(secs small_files "$d" write)
        umount_target $t
        mount_target $t
        sr=$(secs small_files "$d" read)
        rm -rf "$d/small"
        umount_target $t
        echo "round $round $t: write $w s, read $r s, small_write $sw s, small_read $sr s"
        R[$t,write]+="$w "
        R[$t,read]+="$r "
        R[$t,small_write]+="$sw "
        R[$t,small_read]+="$sr "
    done
done

echo
echo "median of $ROUNDS rounds; ratios are speed (reference time / keysafe time): above 1 is faster"
printf '%-12s %10s %10s %10s %16s %16s\n' test plain gocryptfs keysafe "keysafe/gocrypt" "keysafe/plain"
for k in write read small_write small_read; do
    python3 - "$k" "${R[plain,$k]}" "${R[gocryptfs,$k]}" "${R[keysafe,$k]}" <<'EOF'
import statistics, sys
k = sys.argv[1]
p, g, s = (statistics.median(map(float, a.split())) for a in sys.argv[2:])
print(f"{k:<12} {p:>9.2f}s {g:>9.2f}s {s:>9.2f}s {g/s:>15.2f}x {p/s:>15.2f}x")
EOF
done
