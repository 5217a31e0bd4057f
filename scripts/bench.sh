#!/usr/bin/env bash
# `make bench` — every benchmark, release builds, each printing its own figures.
#   BENCHES="replay live plan reconcile" (default: all) selects a subset.
#   replay    : engine over a generated ≥1M-packet capture vs tshark (docs/replay.md)
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
    live) cargo bench --locked -p rebuilder --bench live ;;
    flood) cargo bench --locked -p rebuilder --bench flood ;;
    plan) cargo bench --locked -p mirror --bench plan ;;
    # Debug build with the workspace feature set: the test build's aws-sdk-ec2 is reused (a
    # release or -p build would compile it again); the time measured is moto's, not ours.
    reconcile) cargo test --workspace --locked --bench reconcile_moto ;;
    *) echo "unknown bench '$b' (known: replay live flood plan reconcile)" >&2; exit 2 ;;
  esac
done
