#!/usr/bin/env bash
# `make demo`: the whole mirrorfleet pipeline on one machine, with moto standing in for AWS.
#
#   1. build the workspace
#   2. start a moto server on 127.0.0.1 and seed a demo VPC (scripts/demo/seed.py)
#   3. run onboard-eni, reconcile-mirrors and size-fleet through the Lambda Runtime API
#      (cargo lambda watch --only-lambda-apis + cargo lambda invoke) and show what they did
#   4. data plane: network namespaces where the kernel mirrors a web server's traffic as VXLAN
#      (VNI from the session created above) to the real `rebuilder run`, which forwards every
#      request to a local analyzer (the mirror lab and the recording analyzer of the data-plane
#      test kit: `mirror-lab`, rebuilder/testkit; the client traffic: scripts/demo/traffic.sh)
#      Without root or network namespaces: a generated capture replayed over loopback UDP.
#   5. summary; exit 1 if anything did not match
#
# Everything it starts (processes, namespaces, temp files) is removed on exit.
# Environment: CARGO_TARGET_DIR (default /var/tmp/mirrorfleet/target),
#   MIRRORFLEET_DEMO_SKIP_BUILD=1 to use the binaries already built,
#   MIRRORFLEET_DEMO_NO_NETNS=1 to force the loopback replay,
#   MIRRORFLEET_DEMO_KEEP=1 to keep the work directory (logs) even on success,
#   MIRRORFLEET_BIN_DIR to run binaries from elsewhere than $CARGO_TARGET_DIR/debug.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/mirrorfleet/target}"
[ -d "$root/.venv/bin" ] && export PATH="$root/.venv/bin:$PATH"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
demo_dir="$root/scripts/demo"
bin="${MIRRORFLEET_BIN_DIR:-$CARGO_TARGET_DIR/debug}"
# the data plane's test kit: network-namespace mirror lab, recording analyzer, comparison
lab="$bin/mirror-lab"
work=$(mktemp -d "${TMPDIR:-/tmp}/mirrorfleet-demo.XXXXXX")
prefix="mfdemo$$"
t0=$(date +%s)

# settings shared by the three functions (what the SAM template sets in AWS)
OWNER=mirrorfleet-demo
VNI_SETTING=4242
ASG_NAME=mirrorfleet-rebuilders
FLEET_MIN=1
FLEET_MAX=4
SESSIONS_PER_INSTANCE=2

pids=()
failures=()
notes=()
sessions_created="?"
desired_capacity="?"
requests_sent="-"
requests_received="-"

bold() { if [ -t 1 ]; then printf '\033[1m%s\033[0m\n' "$*"; else printf '%s\n' "$*"; fi; }
step() { echo; bold "==> [$(($(date +%s) - t0))s] $*"; }
info() { echo "  $*"; }
fail() { echo "  FAILED: $*"; failures+=("$*"); }

# start NAME CMD... : run in the background, output to $work/NAME.log
start() {
  local name=$1
  shift
  "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
}

# stop PID: TERM, up to 5 s, then KILL
stop_pid() {
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  set +e
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop_pid "${pids[i]}"; done
  [ -x "$lab" ] && "$lab" down "$prefix" >/dev/null 2>&1
  if [ $rc -ne 0 ] || [ "${MIRRORFLEET_DEMO_KEEP:-}" = 1 ]; then
    echo "  logs kept in $work"
  else
    rm -rf "$work"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_tcp HOST PORT SECONDS [NETNS]
wait_tcp() {
  local host=$1 port=$2 secs=$3 ns=${4:-} i
  local probe=(python3 -c "import socket,sys; socket.create_connection(('$host',$port),0.5).close()")
  for i in $(seq 1 $((secs * 5))); do
    if [ -n "$ns" ]; then
      ip netns exec "$ns" "${probe[@]}" 2>/dev/null && return 0
    else
      "${probe[@]}" 2>/dev/null && return 0
    fi
    sleep 0.2
  done
  return 1
}

# the end of a log, or its panic message when there is one
log_tail() {
  local f="$work/$1.log"
  [ -f "$f" ] || return 0
  if grep -q 'panicked at' "$f"; then
    grep -A3 -m1 'panicked at' "$f" | sed 's/^/    | /'
  else
    sed 's/^/    | /' "$f" | tail -n "${2:-15}"
  fi
}

# ---------------------------------------------------------------------------------------------
step "build (cargo build --workspace --all-targets --locked; CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
if [ "${MIRRORFLEET_DEMO_SKIP_BUILD:-}" = 1 ]; then
  info "skipped (MIRRORFLEET_DEMO_SKIP_BUILD=1)"
else
  cargo build --workspace --all-targets --locked
fi

have_bin() { [ -x "$bin/$1" ]; }
rebuilder_has() { have_bin rebuilder && "$bin/rebuilder" "$1" --help >/dev/null 2>&1; }

# ---------------------------------------------------------------------------------------------
step "moto server (AWS stand-in) on 127.0.0.1"
command -v moto_server >/dev/null || { fail "moto_server is not installed (run make setup)"; exit 1; }
moto_port=$(free_port)
endpoint="http://127.0.0.1:$moto_port"
start moto moto_server -H 127.0.0.1 -p "$moto_port"
wait_tcp 127.0.0.1 "$moto_port" 20 || { log_tail moto; fail "moto did not start"; exit 1; }
info "moto listening on $endpoint"

step "seed the demo VPC (instances, ENIs, NLB with a UDP/4789 listener, mirror target and filter, rebuilder ASG)"
seed() { python3 "$demo_dir/seed.py" --endpoint "$endpoint" --region "$AWS_DEFAULT_REGION" "$@"; }
seed seed --asg-name "$ASG_NAME" --out "$work/world.json" >/dev/null
world() { python3 -c "import json,sys; w=json.load(open('$work/world.json')); print($1)"; }
target_id=$(world 'w["target_id"]')
filter_id=$(world 'w["filter_id"]')
info "VPC $(world 'w["vpc_id"]'), NLB $(world 'w["nlb_arn"].rsplit("/",2)[-2]'), mirror target $target_id, filter $filter_id"
seed report --seed-file "$work/world.json"

# ---------------------------------------------------------------------------------------------
step "control plane: the Lambdas through the Lambda Runtime API (cargo lambda watch --only-lambda-apis)"
python3 "$demo_dir/events.py" --events-dir "$root/events" --seed "$work/world.json" --out "$work/events" >"$work/events.json" \
  || fail "could not write the demo events from events/"
rt_port=$(free_port)
control_plane_ok=1
if ! command -v cargo-lambda >/dev/null; then
  fail "cargo-lambda is not installed (run make setup)"
  control_plane_ok=0
else
  start watch cargo lambda watch --only-lambda-apis --ignore-changes -A 127.0.0.1 -P "$rt_port"
  wait_tcp 127.0.0.1 "$rt_port" 30 || { log_tail watch; fail "cargo lambda watch did not start"; control_plane_ok=0; }
fi

function_env=(
  AWS_LAMBDA_RUNTIME_API="http://127.0.0.1:$rt_port/.rt" AWS_LAMBDA_FUNCTION_NAME=_
  AWS_LAMBDA_FUNCTION_VERSION=1 AWS_LAMBDA_FUNCTION_MEMORY_SIZE=128
  AWS_ENDPOINT_URL="$endpoint" AWS_REGION="$AWS_DEFAULT_REGION" AWS_ACCESS_KEY_ID=mirrorfleet-demo
  AWS_SECRET_ACCESS_KEY=mirrorfleet-demo AWS_EC2_METADATA_DISABLED=true RUST_LOG=info
  MIRROR_TARGET_ID="$target_id" MIRROR_FILTER_ID="$filter_id" MIRROR_VNI="$VNI_SETTING"
  MIRROR_ENI_FILTERS="Name=tag:mirror,Values=true" MIRROR_INSTANCE_FILTERS="Name=tag:mirror,Values=true"
  MIRROR_EXCLUDE_TAG="mirrorfleet:exclude" MIRROR_OWNER="$OWNER"
  FLEET_ASG_NAME="$ASG_NAME" FLEET_MIN="$FLEET_MIN" FLEET_MAX="$FLEET_MAX"
  FLEET_SESSIONS_PER_INSTANCE="$SESSIONS_PER_INSTANCE" FLEET_SCALE_IN_AFTER=3 DRY_RUN=false
)

# run_function NAME EVENT_FILE... : start the binary against the runtime API, invoke it once per
# event, print each JSON report, stop it. Returns 1 if it could not run or an invocation failed.
run_function() {
  local name=$1 f rc=0 n=0
  shift
  if ! have_bin "$name"; then
    fail "$name: no binary at $bin/$name"
    return 1
  fi
  start "fn-$name" env "${function_env[@]}" "$bin/$name"
  local pid=$!
  for f in "$@"; do
    n=$((n + 1))
    sleep 0.2
    if ! kill -0 "$pid" 2>/dev/null; then
      log_tail "fn-$name" 8
      fail "$name exited before its invocation (not implemented on this checkout, or bad settings)"
      rc=1
      break
    fi
    local what
    what=$(python3 -c "import json,sys; print(next((e['what'] for e in json.load(open('$work/events.json')) if e['file']=='$f'), '$(basename "$f")'))")
    info "invoke $name <- $(basename "$f"): $what"
    if timeout 90 cargo lambda invoke _ --data-file "$f" -A 127.0.0.1 -P "$rt_port" >"$work/invoke.out" 2>"$work/invoke.err"; then
      python3 - "$work/invoke.out" <<'EOF' || sed 's/^/      /' "$work/invoke.out"
import json, sys
r = json.load(open(sys.argv[1]))
def count(v):
    if isinstance(v, dict) and "count" in v:
        return v["count"]
    return len(v) if isinstance(v, list) else v
keys = ("created", "deleted", "modified", "unchanged", "skipped", "errors", "desired", "current", "previous", "changed")
parts = [f"{k} {count(r[k])}" for k in keys if isinstance(r, dict) and k in r]
if isinstance(r, dict) and isinstance(r.get("decision"), dict):
    d = r["decision"]
    parts = [f"sessions on the target {r.get('sessions')}", f"desired {r.get('current_desired')} -> {d.get('desired')}",
             "applied" if r.get("applied") else "not applied"]
    if r.get("error"):
        parts.append(f"error {r['error']}")
print("      report: " + (", ".join(parts) if parts else json.dumps(r)[:300]))
sk = r.get("skipped") if isinstance(r, dict) else None
items = sk.get("items", []) if isinstance(sk, dict) else (sk if isinstance(sk, list) else [])
for s in items[:6]:
    print(f"        skipped {json.dumps(s)[:160]}")
EOF
    else
      sed 's/^/      /' "$work/invoke.err" "$work/invoke.out" | tail -n 8
      fail "$name: invocation with $(basename "$f") failed"
      rc=1
    fi
  done
  stop_pid "$pid"
  return $rc
}

if [ $control_plane_ok = 1 ] && [ -f "$work/events.json" ]; then
  ev="$work/events"
  if run_function onboard-eni "$ev/01-web-1-running.json" "$ev/02-api-eni-created.json" "$ev/03-web-3-tagged.json" \
    "$ev/04-web-1-running-again.json"; then
    seed verify --seed-file "$work/world.json" --stage events --owner "$OWNER" --vni "$VNI_SETTING" \
      || fail "onboard-eni: sessions after the events are not what the events call for"
  fi
  if run_function reconcile-mirrors "$ev/scheduled.json"; then
    seed verify --seed-file "$work/world.json" --stage reconcile --owner "$OWNER" --vni "$VNI_SETTING" \
      || fail "reconcile-mirrors: sessions are not what the tags call for"
  fi
  # ceil(owned sessions / sessions per instance), clamped to [min, max]
  expected_desired=$(python3 -c "import json,math; w=json.load(open('$work/world.json')); print(min($FLEET_MAX, max($FLEET_MIN, math.ceil(len(w['expected_mirrored'])/$SESSIONS_PER_INSTANCE))))")
  if run_function size-fleet "$ev/scheduled.json"; then
    seed verify --seed-file "$work/world.json" --stage reconcile --owner "$OWNER" --vni "$VNI_SETTING" \
      --desired "$expected_desired" || fail "size-fleet: desired capacity is not $expected_desired"
  fi
fi
echo
seed report --seed-file "$work/world.json"
seed sessions >"$work/sessions.json"
sessions_created=$(python3 -c "import json; print(sum(1 for s in json.load(open('$work/sessions.json')) if s['tags'].get('mirrorfleet:owner')=='$OWNER'))")
desired_capacity=$(seed asg --name "$ASG_NAME" | python3 -c "import json,sys; print(json.load(sys.stdin)['desired'])")
web1_eni=$(world 'w["by_name"]["web-1"]["eni_id"]')
vni=$(python3 -c "import json; print(next((s['vni'] for s in json.load(open('$work/sessions.json')) if s['eni_id']=='$web1_eni' and s['tags'].get('mirrorfleet:owner')=='$OWNER'), ''))")
if [ -z "$vni" ]; then
  vni=$VNI_SETTING
  info "web-1 has no session: the data plane uses the configured VNI $vni instead of the session's"
fi

# ---------------------------------------------------------------------------------------------
have_rebuilder_run=0
rebuilder_has run && have_rebuilder_run=1
metrics_file="$work/metrics.txt"

if ! have_bin mirror-lab; then
  fail "mirror-lab (the data plane's test kit) is not built at $lab: no data plane"
elif [ "${MIRRORFLEET_DEMO_NO_NETNS:-}" != 1 ] && why=$("$lab" check); then
  step "data plane: network namespaces ($prefix-cli, $prefix-srv, $prefix-col), kernel VXLAN mirror with VNI $vni"
  "$lab" reap mfdemo
  "$lab" up "$prefix" "$vni" both
  eval "$("$lab" addrs)"
  info "client $CLIENT_IP -> web server $SERVER_IP:80 (web-1); tc mirred of its eth0 -> vxlan0 VNI $vni -> $COLLECTOR_IP:4789"
  start web ip netns exec "$prefix-srv" "$lab" analyzer --listen 0.0.0.0:80 --label web \
    --record "$work/web.jsonl" --quiet
  start analyzer ip netns exec "$prefix-col" "$lab" analyzer --listen 127.0.0.1:8080 \
    --label analyzer --record "$work/analyzer.jsonl"
  wait_tcp "$SERVER_IP" 80 10 "$prefix-cli" || fail "the web server did not start"
  wait_tcp 127.0.0.1 8080 10 "$prefix-col" || fail "the analyzer did not start"
  if [ $have_rebuilder_run = 1 ]; then
    start rebuilder ip netns exec "$prefix-col" "$bin/rebuilder" run --listen 0.0.0.0:4789 \
      --upstream http://127.0.0.1:8080 --admin 127.0.0.1:9445
    rebuilder_pid=$!
    rebuilder_started=0
    if wait_tcp 127.0.0.1 9445 15 "$prefix-col" && sleep 0.5 && kill -0 "$rebuilder_pid" 2>/dev/null; then
      rebuilder_started=1
      info "rebuilder run: listening on $COLLECTOR_IP:4789, forwarding to the analyzer at 127.0.0.1:8080, admin 127.0.0.1:9445"
    else
      log_tail rebuilder
      fail "rebuilder run did not start (see its log above)"
    fi
  else
    fail "rebuilder run is not on this checkout: the mirror goes to a VXLAN datagram counter instead and no request can reach the analyzer"
    start udp-sink ip netns exec "$prefix-col" "$lab" udp-sink --listen 0.0.0.0:4789 \
      --record "$work/udp-sink.json"
    sleep 0.5
  fi

  step "traffic: client -> web server (the analyzer lines below come through the mirror)"
  { bash "$demo_dir/traffic.sh" "$prefix-cli" "$SERVER_IP:80" 2>&1 || echo "traffic: FAILED"; } | tee "$work/traffic.log"
  ! grep -q '^traffic: FAILED' "$work/traffic.log" || fail "the client's traffic did not all succeed"
  requests_sent=$(sed -n 's/^sent //p' "$work/traffic.log")
  requests_sent=${requests_sent:-0}
  # bounded wait for the analyzer to catch up
  for _ in $(seq 1 50); do
    got=$(cat "$work/analyzer.jsonl" 2>/dev/null | wc -l)
    [ "$got" -ge "$requests_sent" ] && break
    sleep 0.2
  done
  sleep 1 # anything extra (duplicates) would arrive now
  sed 's/^/    | /' "$work/analyzer.log"
  if [ $have_rebuilder_run = 1 ]; then
    if [ $rebuilder_started = 1 ] && ! kill -0 "$rebuilder_pid" 2>/dev/null; then
      log_tail rebuilder
      fail "rebuilder run exited during the demo (see its log above)"
    fi
    ip netns exec "$prefix-col" curl -s --max-time 5 http://127.0.0.1:9445/metrics >"$metrics_file" || true
  else
    sleep 0.5
    info "VXLAN datagrams counted at $COLLECTOR_IP:4789: $(cat "$work/udp-sink.json" 2>/dev/null || echo none)"
  fi

  step "compare: what the web server got vs what the analyzer got through the mirror"
  "$lab" compare --sent "$work/web.jsonl" --received "$work/analyzer.jsonl" \
    --client-ip "$CLIENT_IP" --expect-count "$requests_sent" --json "$work/verdict.json" \
    || fail "the analyzer did not receive exactly the requests the client sent"
  requests_received=$(cat "$work/analyzer.jsonl" 2>/dev/null | wc -l)
else
  step "data plane: loopback replay (${why:-MIRRORFLEET_DEMO_NO_NETNS=1})"
  info "no network namespaces here: ${why:-disabled by MIRRORFLEET_DEMO_NO_NETNS=1}; replaying a generated capture to the rebuilder over loopback UDP instead"
  if [ $have_rebuilder_run = 1 ] && rebuilder_has generate; then
    bash "$demo_dir/replay.sh" "$bin/rebuilder" "$work" "$vni" || fail "loopback replay: the analyzer did not receive the generated requests"
    requests_sent=$(cat "$work/replay-sent" 2>/dev/null || echo "?")
    requests_received=$(cat "$work/analyzer.jsonl" 2>/dev/null | wc -l)
  else
    fail "rebuilder run / rebuilder generate are not on this checkout: nothing to replay to"
  fi
fi

# ---------------------------------------------------------------------------------------------
step "summary"
info "sessions created by mirrorfleet : $sessions_created (expected $(world 'len(w["expected_mirrored"])'))"
info "rebuilder ASG desired capacity  : $desired_capacity (expected ${expected_desired:-?})"
info "requests sent / at the analyzer : $requests_sent / $requests_received"
if [ -s "$metrics_file" ]; then
  info "rebuilder /metrics (excerpt):"
  grep -E '^rebuilder_(datagrams_received_total|kernel_drops_total|packets_decoded_total|flows_created_total|stream_gaps_total|requests_extracted_total|requests_forwarded_total|requests_dropped_total|upstream_errors_total|queue_depth|healthy)\b' \
    "$metrics_file" | grep -vE '^rebuilder_(requests_forwarded|requests_dropped|upstream_errors)_total.* 0$' | head -n 16 | sed 's/^/    /'
fi
info "wall time: $(($(date +%s) - t0))s"
if [ ${#failures[@]} -gt 0 ]; then
  echo
  bold "make demo: ${#failures[@]} problem(s):"
  for f in "${failures[@]}"; do echo "  - $f"; done
  exit 1
fi
echo
bold "make demo: ok — every mirrored ENI has its session, the fleet is sized, and the analyzer got exactly the requests sent."
