#!/usr/bin/env bash
# Namespace topology for the mirrorfleet demo and system tests: the kernel plays AWS Traffic
# Mirroring.
#
#   PREFIX-cli  client      eth0 10.77.1.10/24 ─┐
#   PREFIX-srv  web server  eth0 10.77.1.20/24 ─┘  tc mirred (ingress + egress of eth0)
#                           mir0 10.77.2.1/24  ─┐  → vxlan0 (VNI, dstport 4789, MTU 9001)
#   PREFIX-col  collector   eth0 10.77.2.2/24  ─┘  rebuilder on UDP/4789, analyzer on 127.0.0.1
#
# The mirrored copies leave the server namespace as VXLAN datagrams from 10.77.2.1 (the "source
# ENI's primary IP") to 10.77.2.2:4789 (the "NLB"), exactly as AWS delivers them to a target.
#
#   netns.sh check                 exit 0 if this machine can build the topology (else say why)
#   netns.sh up PREFIX VNI [both|ingress]   build it (idempotent: tears down PREFIX first)
#   netns.sh down PREFIX           remove the namespaces (and with them every veth and vxlan)
#   netns.sh list PREFIX           print the namespace names
#   netns.sh reap BASE             remove namespaces BASE<pid>... whose process is gone
set -euo pipefail

CLIENT_IP=10.77.1.10
SERVER_IP=10.77.1.20
MIRROR_SRC_IP=10.77.2.1
COLLECTOR_IP=10.77.2.2

die() { echo "netns: $*" >&2; exit 1; }

check() {
  [ "$(id -u)" -eq 0 ] || { echo "not root (network namespaces need CAP_NET_ADMIN)"; return 1; }
  for t in ip tc ethtool; do
    command -v "$t" >/dev/null || { echo "missing tool: $t"; return 1; }
  done
  local probe="mfprobe-$$"
  if ! ip netns add "$probe" 2>/dev/null; then echo "cannot create a network namespace"; return 1; fi
  local ok=0
  ip -n "$probe" link add vxprobe type vxlan id 1 local 127.0.0.1 remote 127.0.0.2 dstport 4789 nolearning 2>/dev/null || ok=1
  ip netns del "$probe" 2>/dev/null || true
  [ $ok -eq 0 ] || { echo "the kernel has no vxlan support"; return 1; }
}

down() {
  local p=$1 ns
  for ns in "$p-cli" "$p-srv" "$p-col"; do
    if ip netns list | awk '{print $1}' | grep -qx "$ns"; then
      # Anything still running inside would keep the namespace's sockets alive.
      local pids
      pids=$(ip netns pids "$ns" 2>/dev/null || true)
      if [ -n "$pids" ]; then
        kill $pids 2>/dev/null || true
        sleep 0.3
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        [ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
      fi
      ip netns del "$ns" 2>/dev/null || true
    fi
  done
}

up() {
  local p=$1 vni=$2 dir=${3:-both}
  [[ "$vni" =~ ^[0-9]+$ ]] && [ "$vni" -le 16777215 ] || die "VNI must be 0..16777215, got '$vni'"
  down "$p"
  local cli="$p-cli" srv="$p-srv" col="$p-col"
  ip netns add "$cli"
  ip netns add "$srv"
  ip netns add "$col"
  for ns in "$cli" "$srv" "$col"; do ip -n "$ns" link set lo up; done

  # client <-> server
  ip link add eth0 netns "$cli" type veth peer name eth0 netns "$srv"
  ip -n "$cli" addr add "$CLIENT_IP/24" dev eth0
  ip -n "$srv" addr add "$SERVER_IP/24" dev eth0
  # server (mirror source) <-> collector (mirror target), jumbo MTU like the AWS path
  ip link add mir0 netns "$srv" type veth peer name eth0 netns "$col"
  ip -n "$srv" link set mir0 mtu 9100
  ip -n "$col" link set eth0 mtu 9100
  ip -n "$srv" addr add "$MIRROR_SRC_IP/24" dev mir0
  ip -n "$col" addr add "$COLLECTOR_IP/24" dev eth0
  for ns in "$cli" "$srv" "$col"; do
    ip netns exec "$ns" ethtool -K eth0 tx off gso off tso off >/dev/null 2>&1 || true
    ip -n "$ns" link set eth0 up
  done
  ip netns exec "$srv" ethtool -K mir0 tx off gso off tso off >/dev/null 2>&1 || true
  ip -n "$srv" link set mir0 up

  # the mirror: every frame in and out of the server's eth0, copied into VXLAN
  ip -n "$srv" link add vxlan0 type vxlan id "$vni" local "$MIRROR_SRC_IP" remote "$COLLECTOR_IP" \
    dstport 4789 dev mir0 nolearning
  ip -n "$srv" link set vxlan0 mtu 9001 up
  ip netns exec "$srv" tc qdisc add dev eth0 clsact
  ip netns exec "$srv" tc filter add dev eth0 ingress protocol all prio 1 u32 match u32 0 0 \
    action mirred egress mirror dev vxlan0
  if [ "$dir" = both ]; then
    ip netns exec "$srv" tc filter add dev eth0 egress protocol all prio 1 u32 match u32 0 0 \
      action mirred egress mirror dev vxlan0
  fi
}

# Namespaces left behind by a run that was killed (SIGKILL, power loss): names are
# BASE<pid>[x<n>]-{cli,srv,col}; remove those whose pid is gone.
reap() {
  local base=$1 ns pid
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${base}[0-9]+(x[0-9]+)?-(cli|srv|col)$" || true); do
    pid=${ns#"$base"}
    pid=${pid%%[x-]*}
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "netns: removing $ns (left by process $pid, gone)" >&2
      down "${ns%-*}"
    fi
  done
}

case "${1:-}" in
  check) check ;;
  up) [ $# -ge 3 ] || die "usage: netns.sh up PREFIX VNI [both|ingress]"; up "$2" "$3" "${4:-both}" ;;
  down) [ $# -eq 2 ] || die "usage: netns.sh down PREFIX"; down "$2" ;;
  list) echo "$2-cli $2-srv $2-col" ;;
  reap) [ $# -eq 2 ] || die "usage: netns.sh reap BASE"; reap "$2" ;;
  addrs) echo "CLIENT_IP=$CLIENT_IP SERVER_IP=$SERVER_IP MIRROR_SRC_IP=$MIRROR_SRC_IP COLLECTOR_IP=$COLLECTOR_IP" ;;
  *) die "usage: netns.sh check|up|down|list|reap|addrs ..." ;;
esac
