#!/usr/bin/env bash
# The data plane without network namespaces: `rebuilder generate` writes a capture of mirrored
# traffic and its ground truth, `mirror-lab send-pcap` sends its VXLAN datagrams over loopback
# UDP to `rebuilder run`, which forwards to the recording analyzer (`mirror-lab analyzer`);
# the analyzer must receive exactly the requests of the truth (`mirror-lab compare`).
#
#   replay.sh REBUILDER_BIN WORK_DIR VNI
# mirror-lab is taken from REBUILDER_BIN's directory (or $MIRROR_LAB).
# Writes WORK_DIR/replay-sent (requests in the truth), WORK_DIR/analyzer.jsonl,
# WORK_DIR/metrics.txt; exits 1 on any mismatch. Stops everything it started.
set -euo pipefail
rebuilder=$1
work=$2
vni=$3
lab=${MIRROR_LAB:-$(dirname "$rebuilder")/mirror-lab}
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT
port() { python3 -c 'import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM if sys.argv[1]=="udp" else socket.SOCK_STREAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' "$1"; }
wait_tcp() {
  for _ in $(seq 1 75); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1',$1),0.5).close()" 2>/dev/null && return 0
    sleep 0.2
  done
  return 1
}

udp_port=$(port udp)
analyzer_port=$(port tcp)
admin_port=$(port tcp)

echo "  rebuilder generate: 12 keep-alive connections (GET, POST, PUT; some chunked bodies), VNI $vni"
"$rebuilder" generate --out "$work/replay.pcap" --truth "$work/replay-truth.jsonl" --seed 7 \
  --connections 12 --concurrency 3 --max-requests 4 --methods GET,POST,PUT --chunked 0.3 \
  --max-body 6000 --vnis "$vni" 2>&1 | sed 's/^/    /'
python3 -c "import json; print(sum(1 for l in open('$work/replay-truth.jsonl') if json.loads(l).get('expected', True)))" \
  >"$work/replay-sent"

"$lab" analyzer --listen "127.0.0.1:$analyzer_port" --label analyzer --quiet \
  --record "$work/analyzer.jsonl" >"$work/analyzer.log" 2>&1 &
pids+=($!)
wait_tcp "$analyzer_port" || { echo "  the analyzer did not start"; exit 1; }
"$rebuilder" run --listen "127.0.0.1:$udp_port" --upstream "http://127.0.0.1:$analyzer_port" \
  --admin "127.0.0.1:$admin_port" >"$work/rebuilder.log" 2>&1 &
rebuilder_pid=$!
pids+=($rebuilder_pid)
wait_tcp "$admin_port" && sleep 0.5 && kill -0 "$rebuilder_pid" 2>/dev/null \
  || { echo "  rebuilder run did not start:"; tail -n 15 "$work/rebuilder.log" | sed 's/^/    | /'; exit 1; }
echo "  rebuilder run on 127.0.0.1:$udp_port (UDP), forwarding to the analyzer on 127.0.0.1:$analyzer_port"

"$lab" send-pcap "$work/replay.pcap" --to "127.0.0.1:$udp_port" --pps 20000 --max-seconds 30 | sed 's/^/  /'
want=$(cat "$work/replay-sent")
for _ in $(seq 1 75); do
  [ "$(cat "$work/analyzer.jsonl" 2>/dev/null | wc -l)" -ge "$want" ] && break
  sleep 0.2
done
sleep 1
if ! kill -0 "$rebuilder_pid" 2>/dev/null; then
  echo "  rebuilder run exited during the replay:"
  tail -n 15 "$work/rebuilder.log" | sed 's/^/    | /'
  exit 1
fi
curl -s --max-time 5 "http://127.0.0.1:$admin_port/metrics" >"$work/metrics.txt" || true
"$lab" compare --sent "$work/replay-truth.jsonl" --received "$work/analyzer.jsonl" --quiet
