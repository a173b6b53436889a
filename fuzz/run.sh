#!/usr/bin/env bash
# Builds and runs the fuzz targets; see README.md.
#
#   fuzz/run.sh build                    build every target
#   fuzz/run.sh ci [SECONDS]             every target for SECONDS (default 20) on the committed
#                                        corpus; the first crash fails (CI)
#   fuzz/run.sh run TARGET CPU_SECONDS   one target until it has used CPU_SECONDS of CPU time
#                                        (not wall time: the machine is shared), growing a work
#                                        corpus outside the repository; prints the figures
#   fuzz/run.sh cmin TARGET              minimise work corpus + committed seeds into the
#                                        committed corpus
#   fuzz/run.sh repro TARGET FILE...     run the target on these inputs only
#   fuzz/run.sh list                     the target names
#
# Environment: FUZZ_TARGET_DIR (build directory, default /root/.cache/keysafe-fuzz-target),
# FUZZ_WORK (work corpora and crash artifacts, default /root/.cache/keysafe-fuzz-work),
# FUZZ_SANITIZER (default none; `address` for AddressSanitizer, a separate and slower build),
# FUZZ_TOOLCHAIN (default nightly), FUZZ_NICE (niceness of `run`, default 10), FUZZ_DEADLINE
# (`run` stops at this time, seconds since the epoch, even if the budget is not used up),
# FUZZ_FLAGS (more libFuzzer flags for every target).
set -euo pipefail
# Paths given to `repro` are relative to where the script was called from.
CALLER_DIR="$PWD"
cd "$(dirname "$0")"

TOOLCHAIN="${FUZZ_TOOLCHAIN:-nightly}"
SANITIZER="${FUZZ_SANITIZER:-none}"
TARGET_DIR="${FUZZ_TARGET_DIR:-/root/.cache/keysafe-fuzz-target}"
WORK="${FUZZ_WORK:-/root/.cache/keysafe-fuzz-work}"
if [ "$SANITIZER" != none ]; then
    TARGET_DIR="$TARGET_DIR-$SANITIZER"
fi
BIN_DIR="$TARGET_DIR/x86_64-unknown-linux-gnu/release"
# A hang is a finding: no input may take this long.
TIMEOUT=10
# Long runs share the machine: they run at this niceness (FUZZ_NICE).
NICE="${FUZZ_NICE:-10}"

# Extra libFuzzer flags per target. kms_http builds a gateway per input (so that an input
# replays the same way), and each gateway's Prometheus registry leaves about 1 KB behind in
# metrics-exporter-prometheus when dropped (a process that serves builds one gateway, so this
# is bounded there): millions of inputs need more than libFuzzer's default 2 GB.
# FUZZ_FLAGS adds libFuzzer flags to every target (for example `-dict=FILE`).
extra_flags() {
    case "$1" in
    kms_http) echo "-rss_limit_mb=8192" ;;
    esac
    echo "${FUZZ_FLAGS:-}"
}

targets() {
    sed -n 's/^name = "\([a-z_0-9]*\)"$/\1/p' Cargo.toml | grep -v '^keysafe-fuzz$'
}

build() {
    cargo "+$TOOLCHAIN" fuzz build -s "$SANITIZER" --target-dir "$TARGET_DIR" "$@"
}

# CPU seconds (user + system) a process has used so far.
cpu_seconds() {
    local ticks
    ticks=$(awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0)
    echo $((ticks / $(getconf CLK_TCK)))
}

# One line of figures for a finished run: CPU seconds, why it ended, executions, coverage
# (edges) and features of the last status line, the work corpus, crash artifacts.
report() {
    local t="$1" used="$2" ended="$3" log="$4" last execs cov ft
    last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    [ -n "$execs" ] || execs=$(echo "$last" | sed -n 's/^#\([0-9]*\).*/\1/p')
    cov=$(echo "$last" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
    ft=$(echo "$last" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
    echo "target=$t cpu_seconds=$used ended=$ended execs=${execs:-0} cov=${cov:-?} ft=${ft:-?}" \
        "corpus_files=$(find "$WORK/$t/corpus" -type f | wc -l)" \
        "corpus_bytes=$(du -sb "$WORK/$t/corpus" | cut -f1)" \
        "crashes=$(find "$WORK/$t/artifacts" -type f | wc -l) log=$log"
}

# The whole command is one function, read before it runs: editing this file while a long run
# is going cannot change what that run executes.
main() {
    cmd="${1:-}"
    shift || true
    case "$cmd" in
    list)
        targets
        ;;
    build)
        build "$@"
        ;;
    ci)
        secs="${1:-20}"
        build
        scratch=$(mktemp -d)
        trap 'rm -rf "$scratch"' EXIT
        failed=()
        for t in $(targets); do
            mkdir -p "$scratch/$t/corpus" "$scratch/$t/artifacts" "corpus/$t"
            echo "== fuzz $t (${secs}s)"
            if ! "$BIN_DIR/$t" "$scratch/$t/corpus" "corpus/$t" \
                -max_total_time="$secs" -timeout="$TIMEOUT" -print_final_stats=1 $(extra_flags "$t") \
                -artifact_prefix="$scratch/$t/artifacts/" >"$scratch/$t/log" 2>&1; then
                failed+=("$t")
                tail -n 60 "$scratch/$t/log"
                for a in "$scratch/$t/artifacts"/*; do
                    [ -e "$a" ] || continue
                    echo "-- crashing input $(basename "$a") (base64):"
                    base64 -w0 "$a"
                    echo
                done
            else
                grep -E '^#[0-9]+.*(DONE|pulse|NEW|INITED)' "$scratch/$t/log" | tail -n 1 || true
            fi
        done
        if [ "${#failed[@]}" -gt 0 ]; then
            echo "fuzz targets failed: ${failed[*]} (reproduce: fuzz/run.sh repro TARGET FILE)"
            exit 1
        fi
        ;;
    run)
        t="$1"
        budget="$2"
        [ -x "$BIN_DIR/$t" ] || build "$t"
        mkdir -p "$WORK/$t/corpus" "$WORK/$t/artifacts" "corpus/$t"
        log="$WORK/$t/log.$(date +%s)"
        # -max_total_time is wall time; the CPU budget below is what ends the run, or the
        # deadline FUZZ_DEADLINE (seconds since the epoch), whichever comes first.
        deadline="${FUZZ_DEADLINE:-}"
        nice -n "$NICE" "$BIN_DIR/$t" "$WORK/$t/corpus" "corpus/$t" \
            -max_total_time=86400 -timeout="$TIMEOUT" -print_final_stats=1 $(extra_flags "$t") \
            -artifact_prefix="$WORK/$t/artifacts/" >"$log" 2>&1 &
        pid=$!
        used=0
        ended=exited
        while kill -0 "$pid" 2>/dev/null; do
            used=$(cpu_seconds "$pid")
            if [ "$used" -ge "$budget" ]; then
                ended=budget
                kill -INT "$pid"
                break
            fi
            if [ -n "$deadline" ] && [ "$(date +%s)" -ge "$deadline" ]; then
                ended=deadline
                kill -INT "$pid"
                break
            fi
            sleep 5
        done
        status=0
        wait "$pid" || status=$?
        if [ "$ended" = exited ]; then
            ended="exited($status)"
        fi
        report "$t" "$used" "$ended" "$log"
        ;;
    cmin)
        t="$1"
        [ -x "$BIN_DIR/$t" ] || build "$t"
        merged=$(mktemp -d)
        trap 'rm -rf "$merged"' EXIT
        mkdir -p "$WORK/$t/corpus" "corpus/$t"
        # Hand-made seeds and the inputs of past crashes stay, under their names; of the rest,
        # the smallest set that covers every feature they add (set cover, not greedy merge:
        # about half the files for the same features).
        find "corpus/$t" -maxdepth 1 -type f \( -name 'seed-*' -o -name 'crash-*' \) \
            -exec cp {} "$merged"/ \;
        nice -n "$NICE" "$BIN_DIR/$t" -set_cover_merge=1 -timeout="$TIMEOUT" \
            "$merged" "corpus/$t" "$WORK/$t/corpus" >"$WORK/$t/cmin.log" 2>&1
        rm -f "corpus/$t"/*
        cp "$merged"/* "corpus/$t"/ 2>/dev/null || true
        echo "target=$t committed_corpus_files=$(ls "corpus/$t" | wc -l) bytes=$(du -sb "corpus/$t" | cut -f1)"
        ;;
    repro)
        t="$1"
        shift
        [ -x "$BIN_DIR/$t" ] || build "$t"
        files=()
        for f in "$@"; do
            case "$f" in
            /* | -*) files+=("$f") ;;
            *) files+=("$CALLER_DIR/$f") ;;
            esac
        done
        RUST_BACKTRACE=1 "$BIN_DIR/$t" -timeout="$TIMEOUT" "${files[@]}"
        ;;
    *)
        sed -n '2,/^set -euo/p' "$(basename "$0")" | sed '$d'
        exit 2
        ;;
    esac
}

main "$@"; exit $?
