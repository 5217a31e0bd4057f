#!/usr/bin/env bash
# Soak of `rebuilder run` over loopback: mixed traffic at a fixed rate for N minutes (default 10),
# RSS and counters sampled every few seconds; exits 1 when RSS grows or the counters do not add up.
#
#   scripts/soak.sh [MINUTES]      (MF_SOAK_PPS=20000 MF_SOAK_SAMPLE_S=5 MF_SOAK_WORKERS=2)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export MF_SOAK_MINUTES=${1:-${MF_SOAK_MINUTES:-10}}
exec cargo bench --locked -p rebuilder --bench soak
