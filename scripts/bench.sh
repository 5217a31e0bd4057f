#!/usr/bin/env bash
# `make bench` — every benchmark, release builds, each printing its own figures.
#   BENCHES="replay live plan reconcile" selects a subset (default: all but pairing, which
#   compiles a second rebuilder).
#   replay    : engine over a generated ≥1M-packet capture vs tshark (docs/replay.md)
#   pairing   : the same capture, replay's CPU against the engine before responses were paired
#               (b0a53fa, built from this repository's history; issue 13's 1.3x bar)
#   live      : `rebuilder run` fed over loopback UDP at fixed rates (docs/rebuilder.md)
#   flood     : floods mixed with legitimate traffic: caps, evictions, RSS (docs/reliability.md)
#   plan      : control-plane selection + planning over 5,000 ENIs (docs/control-plane-core.md)
#   reconcile : reconcile-mirrors against 5,000 ENIs in moto, API calls and wall time
#               (docs/control-plane-tests.md)
set -euo pipefail
cd "$(dirname "$0")/.."
benches=${BENCHES:-replay live flood plan reconcile}
for b in $benches; do
  echo "=== bench: $b ($(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg))"
  case "$b" in
    replay) cargo bench --locked -p rebuilder --bench replay ;;
    pairing)
      # The baseline is built from its own tree and lock file, in its own target directory.
      base=b0a53fa
      root=${MF_BASELINE_DIR:-/var/tmp/mirrorfleet/baseline-$base}
      if ! git cat-file -e "$base^{commit}" 2>/dev/null; then
        echo "pairing: commit $base is not in this clone (a shallow clone?): git fetch --unshallow" >&2
        exit 2
      fi
      rm -rf "$root/src" && mkdir -p "$root/src"
      git archive "$base" | tar -x -C "$root/src"
      (cd "$root/src" && CARGO_TARGET_DIR="$root/target" cargo build --release --locked -p rebuilder --bin rebuilder)
      MF_BENCH_BASELINE="$root/target/release/rebuilder" MF_BENCH_SKIP_TSHARK=1 \
        cargo bench --locked -p rebuilder --bench replay ;;
    live) cargo bench --locked -p rebuilder --bench live ;;
    flood) cargo bench --locked -p rebuilder --bench flood ;;
    plan) cargo bench --locked -p mirror --bench plan ;;
    # Debug build with the workspace feature set: the test build's aws-sdk-ec2 is reused (a
    # release or -p build would compile it again); the time measured is moto's, not ours.
    reconcile) cargo test --workspace --locked --bench reconcile_moto ;;
    *) echo "unknown bench '$b' (known: replay pairing live flood plan reconcile)" >&2; exit 2 ;;
  esac
done
