#!/usr/bin/env bash
# Runs every cargo-fuzz target of the rebuilder (rebuilder/fuzz, a workspace of its own) for a
# fixed number of executions each, one after the other, and prints one summary line per target.
#
#   scripts/fuzz.sh [EXECUTIONS]        default 1000000 per target (`make fuzz`);
#                                       CI smoke: scripts/fuzz.sh 20000
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). cargo-fuzz passes nightly -Z flags;
# RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
# Environment: FUZZ_TARGETS (space separated; default all), FUZZ_SANITIZER (default none:
# the library denies unsafe code but for a cache prefetch hint; `address` for ASan),
# FUZZ_TARGET_DIR (build directory, default $CARGO_TARGET_DIR-fuzz or
# /var/tmp/mirrorfleet/fuzz-target), FUZZ_TIMEOUT (s per input, 10).
# The corpus is kept in rebuilder/fuzz/corpus/<target> between runs; a crashing input is written
# to rebuilder/fuzz/artifacts/<target>/ and the script exits 1 (reproduce with
# `cargo fuzz run <target> <file>` from rebuilder/, then keep it as a regression test).
set -euo pipefail

runs=${1:-1000000}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
targets=${FUZZ_TARGETS:-"engine_datagram http_split http_response reassembly_segments geneve"}
sanitizer=${FUZZ_SANITIZER:-none}
if [[ -n "${FUZZ_TARGET_DIR:-}" ]]; then
    export CARGO_TARGET_DIR=$FUZZ_TARGET_DIR
elif [[ -n "${CARGO_TARGET_DIR:-}" ]]; then
    export CARGO_TARGET_DIR=$CARGO_TARGET_DIR-fuzz
else
    export CARGO_TARGET_DIR=/var/tmp/mirrorfleet/fuzz-target
fi
export RUSTC_BOOTSTRAP=1
export PATH=$HOME/.cargo/bin:$PATH

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2
    exit 1
fi

cd "$root/rebuilder"
flags=(--sanitizer "$sanitizer" --debug-assertions --release)
t0=$(date +%s)
cargo fuzz build "${flags[@]}"
echo "fuzz.sh: build $(( $(date +%s) - t0 )) s (sanitizer $sanitizer, debug assertions)"

status=0
for t in $targets; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    extra=()
    [[ $t != reassembly_segments && $t != geneve ]] && extra+=(-dict=fuzz/http.dict)
    log=$(mktemp)
    start=$(date +%s)
    if cargo fuzz run "${flags[@]}" "$t" "fuzz/corpus/$t" -- \
        -runs="$runs" -timeout="${FUZZ_TIMEOUT:-10}" -rss_limit_mb=2048 -max_len=16384 \
        -print_final_stats=1 "${extra[@]}" >"$log" 2>&1; then
        result=ok
    else
        result=FAILED
        status=1
        tail -n 60 "$log" >&2
    fi
    secs=$(( $(date +%s) - start ))
    done_line=$(grep -E '^Done [0-9]+ runs' "$log" | tail -n 1 || true)
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -n 1 || true)
    corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
    printf 'fuzz.sh: %-20s %s  %s  (%s, corpus %s inputs, %s s)\n' "$t" "$result" "${done_line:-no Done line}" "${cov:-cov ?}" "$corpus" "$secs"
    rm -f "$log"
done
exit $status
