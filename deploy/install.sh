#!/usr/bin/env bash
# Installs (or updates) the mirrorfleet rebuilder on a host: binary, systemd unit, env file, the
# receive-buffer sysctl and, when asked, the CloudWatch agent configuration and the source-map
# refresh timer.
#
# Usage:
#   install.sh --artifact URI [--sha256 HEX] [--s3-version-id ID] [--upstream URL] [--listen ADDR]
#              [--admin ADDR] [--vni-seed SEED] [--env KEY=VAL]...
#              [--metrics-namespace NS --log-group NAME --metrics-log-group NAME --asg-name NAME]
#              [--sources-uri s3://BUCKET/KEY]
#
#   --artifact URI       https:// URL, s3:// URI (needs the aws cli) or local path of either a
#                        tarball holding `rebuilder` (normally built by scripts/package-rebuilder.sh,
#                        with this script, the units and the agent configuration) or a bare binary
#   --sha256 HEX         expected SHA-256 of the artifact: checked before anything is unpacked or
#                        installed; a mismatch installs nothing and exits 1
#   --s3-version-id ID   with an s3:// artifact: fetch exactly this object version
#   --upstream URL       analyzer URL            -> REBUILDER_UPSTREAM
#   --listen ADDR        UDP listen address(es)  -> REBUILDER_LISTEN
#   --admin ADDR         admin listener          -> REBUILDER_ADMIN
#   --vni-seed SEED      accept the VXLAN id derived from SEED (the stack id; see docs/deploy.md,
#                        "Mirror VNI") -> REBUILDER_VNI_ALLOW
#   --env KEY=VAL        any other variable (repeatable), e.g. --env REBUILDER_WORKERS=4
#   --metrics-namespace NS, --log-group NAME, --metrics-log-group NAME, --asg-name NAME
#                        (all four together) configure the CloudWatch agent: the rebuilder's
#                        /metrics into namespace NS with the dimension AutoScalingGroupName=NAME
#                        (its raw EMF records in the metrics log group), its journal into the log
#                        group; the agent itself comes from the distribution (amazon-cloudwatch-agent)
#   --sources-uri URI    refresh the control plane's source map from this S3 object every minute
#                        into /var/lib/mirrorfleet/sources.json -> REBUILDER_SOURCES_FILE
#
# Idempotent: running it again with the same arguments changes nothing; values not given again
# are kept from the existing /etc/mirrorfleet/rebuilder.env. Enables rebuilder.service and
# restarts it if it is running (the caller starts it the first time).
# INSTALL_ROOT=/some/dir installs under that directory and skips systemctl and sysctl (tests, images).
set -euo pipefail

root=${INSTALL_ROOT:-}
bin_dir="$root/usr/local/bin"
libexec_dir="$root/usr/local/libexec/mirrorfleet"
unit_dir="$root/etc/systemd/system"
env_dir="$root/etc/mirrorfleet"
env_file="$env_dir/rebuilder.env"
sysctl_file="$root/etc/sysctl.d/90-mirrorfleet-rebuilder.conf"
agent_dir="$root/opt/aws/amazon-cloudwatch-agent/etc"
agent_ctl=/opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl
log_dir="$root/var/log/mirrorfleet"
sources_file=/var/lib/mirrorfleet/sources.json
self_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The receive buffer the daemon asks for by default (REBUILDER_RCVBUF_BYTES, 32 MiB).
default_rcvbuf=33554432

die() { echo "install.sh: $*" >&2; exit 1; }
log() { echo "install.sh: $*" >&2; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }

artifact="" sha256="" version_id="" vni_seed="" sources_uri=""
namespace="" log_group="" metrics_log_group="" asg_name=""
declare -a keys=() vals=()
set_var() { # KEY VALUE: later values win
  local k=$1 v=$2 i
  [[ $k =~ ^[A-Z_][A-Z0-9_]*$ ]] || die "invalid variable name: $k"
  [[ $v != *$'\n'* ]] || die "value of $k contains a newline"
  for i in "${!keys[@]}"; do
    if [ "${keys[$i]}" = "$k" ]; then vals[i]=$v; return; fi
  done
  keys+=("$k"); vals+=("$v")
}
need() { [ "$2" -ge 2 ] || die "$1 needs a value"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --artifact) need "$1" $#; artifact=$2; shift 2 ;;
    --sha256) need "$1" $#; sha256=$2; shift 2 ;;
    --s3-version-id) need "$1" $#; version_id=$2; shift 2 ;;
    --upstream) need "$1" $#; set_var REBUILDER_UPSTREAM "$2"; shift 2 ;;
    --listen) need "$1" $#; set_var REBUILDER_LISTEN "$2"; shift 2 ;;
    --admin) need "$1" $#; set_var REBUILDER_ADMIN "$2"; shift 2 ;;
    --vni-seed) need "$1" $#; vni_seed=$2; shift 2 ;;
    --metrics-namespace) need "$1" $#; namespace=$2; shift 2 ;;
    --log-group) need "$1" $#; log_group=$2; shift 2 ;;
    --metrics-log-group) need "$1" $#; metrics_log_group=$2; shift 2 ;;
    --asg-name) need "$1" $#; asg_name=$2; shift 2 ;;
    --sources-uri) need "$1" $#; sources_uri=$2; shift 2 ;;
    --env)
      need "$1" $#
      [[ $2 == *=* ]] || die "--env wants KEY=VAL, got: $2"
      set_var "${2%%=*}" "${2#*=}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
[ -n "$artifact" ] || die "--artifact is required (see --help)"
if [ -n "$sha256" ]; then
  [[ ${sha256,,} =~ ^[0-9a-f]{64}$ ]] || die "--sha256 wants 64 hexadecimal digits, got: $sha256"
  sha256=${sha256,,}
fi
if [ -n "$version_id" ]; then
  [[ $artifact == s3://* ]] || die "--s3-version-id only applies to an s3:// artifact"
  [[ $version_id =~ ^[A-Za-z0-9._+/=-]{1,1024}$ ]] || die "invalid S3 version id: $version_id"
fi

# The mirror's VXLAN id, derived from a seed exactly as the control plane derives it when no
# VNI is configured: 1 + (first 24 bits of SHA-256(seed)) mod 16777215, so 1..=16777215.
vni_from_seed() {
  local h
  h=$(printf '%s' "$1" | sha256sum | cut -c1-6)
  echo $((1 + 16#$h % 16777215))
}
if [ -n "$vni_seed" ]; then
  [[ $vni_seed =~ ^[A-Za-z0-9:/._-]{1,512}$ ]] || die "invalid --vni-seed: $vni_seed"
  set_var REBUILDER_VNI_ALLOW "$(vni_from_seed "$vni_seed")"
fi

cloudwatch=0
if [ -n "$namespace$log_group$metrics_log_group$asg_name" ]; then
  if [ -z "$namespace" ] || [ -z "$log_group" ] || [ -z "$metrics_log_group" ] || [ -z "$asg_name" ]; then
    die "--metrics-namespace, --log-group, --metrics-log-group and --asg-name go together"
  fi
  # The values are written into JSON and YAML strings: no quotes, backslashes or separators.
  [[ $namespace =~ ^[A-Za-z0-9._/#:-]{1,255}$ ]] || die "invalid --metrics-namespace: $namespace"
  [[ $log_group =~ ^[A-Za-z0-9._/#-]{1,512}$ ]] || die "invalid --log-group: $log_group"
  [[ $metrics_log_group =~ ^[A-Za-z0-9._/#-]{1,512}$ ]] || die "invalid --metrics-log-group: $metrics_log_group"
  [[ $asg_name =~ ^[A-Za-z0-9._-]{1,255}$ ]] || die "invalid --asg-name: $asg_name"
  cloudwatch=1
fi
if [ -n "$sources_uri" ]; then
  [[ $sources_uri =~ ^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/[A-Za-z0-9._/-]+$ ]] \
    || die "--sources-uri wants s3://bucket/key, got: $sources_uri"
  set_var REBUILDER_SOURCES_FILE "$sources_file"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# 1. Fetch.
fetched="$work/artifact"
case "$artifact" in
  https://*)
    command -v curl >/dev/null || die "curl is needed for $artifact"
    curl -fsSL --retry 5 --retry-delay 2 --connect-timeout 10 -o "$fetched" "$artifact" \
      || die "cannot download $artifact"
    ;;
  s3://*)
    command -v aws >/dev/null || die "the aws cli is needed for $artifact"
    if [ -n "$version_id" ]; then
      # GetObject with a version id (needs s3:GetObjectVersion): the exact object the stack names,
      # whatever was uploaded under the same key since.
      rest=${artifact#s3://}
      aws s3api get-object --bucket "${rest%%/*}" --key "${rest#*/}" --version-id "$version_id" \
        "$fetched" >/dev/null || die "cannot get $artifact version $version_id"
    else
      aws s3 cp --only-show-errors "$artifact" "$fetched" || die "cannot copy $artifact"
    fi
    ;;
  http://*) die "refusing plain http for the artifact: use https:// or s3://" ;;
  *://*) die "unsupported artifact scheme: $artifact" ;;
  *)
    [ -f "$artifact" ] || die "no such file: $artifact"
    cp "$artifact" "$fetched"
    ;;
esac

# 2. Verify, before anything of the artifact is unpacked or run.
if [ -n "$sha256" ]; then
  actual=$(sha256sum "$fetched" | cut -d' ' -f1)
  [ "$actual" = "$sha256" ] \
    || die "sha256 mismatch for $artifact: expected $sha256, got $actual; nothing installed"
  log "sha256 verified ($sha256)"
fi

# 3. Unpack: a tarball holding `rebuilder`, or the bare binary.
unpacked=""
if tar -tzf "$fetched" >/dev/null 2>&1 || tar -tf "$fetched" >/dev/null 2>&1; then
  unpacked="$work/x"
  mkdir "$unpacked"
  tar -xf "$fetched" -C "$unpacked" || die "cannot unpack $artifact"
  new_bin=$(find "$unpacked" -type f -name rebuilder | head -n 1)
  [ -n "$new_bin" ] || die "$artifact holds no file named rebuilder"
elif [ "$(head -c 4 "$fetched" | od -An -c | tr -d ' ')" = '177ELF' ]; then
  new_bin=$fetched
else
  die "$artifact is neither a tarball nor an ELF binary"
fi
# host_file NAME: a file shipped with the release (in the tarball, else beside this script).
host_file() {
  local f=""
  [ -n "$unpacked" ] && f=$(find "$unpacked" -type f -name "$1" | head -n 1)
  if [ -z "$f" ] && [ -f "$self_dir/$1" ]; then f="$self_dir/$1"; fi
  [ -n "$f" ] || die "no $1 in the artifact nor beside install.sh"
  echo "$f"
}
unit_src=$(host_file rebuilder.service)
chmod 0755 "$new_bin"
"$new_bin" run --help >/dev/null 2>&1 || die "the artifact's rebuilder does not run on this host"

# 4. Everything is prepared and checked in $work first: a refusal installs nothing.
# Env file: existing values kept unless given again.
declare -a final_keys=() final_vals=()
if [ -f "$env_file" ]; then
  while IFS= read -r line || [ -n "$line" ]; do
    [[ $line =~ ^([A-Z_][A-Z0-9_]*)=(.*)$ ]] || continue
    k=${BASH_REMATCH[1]} v=${BASH_REMATCH[2]}
    if [[ $v == \"*\" ]]; then
      v=${v:1:${#v}-2}
      v=${v//\\\"/\"}
      v=${v//\\\\/\\}
    fi
    final_keys+=("$k"); final_vals+=("$v")
  done <"$env_file"
fi
for i in "${!keys[@]}"; do
  found=0
  for j in "${!final_keys[@]}"; do
    if [ "${final_keys[$j]}" = "${keys[$i]}" ]; then final_vals[j]=${vals[$i]}; found=1; fi
  done
  if [ "$found" = 0 ]; then final_keys+=("${keys[$i]}"); final_vals+=("${vals[$i]}"); fi
done
# final VAR: the value the daemon will see (empty when unset).
final() {
  local j
  for j in "${!final_keys[@]}"; do
    if [ "${final_keys[$j]}" = "$1" ]; then echo "${final_vals[$j]}"; return; fi
  done
}
[ -n "$(final REBUILDER_UPSTREAM)" ] || die "no upstream: pass --upstream URL (none in $env_file yet)"
{
  echo "# mirrorfleet rebuilder settings, written by install.sh (rebuilder run --help lists them all)"
  for i in "${!final_keys[@]}"; do
    v=${final_vals[$i]}
    v=${v//\\/\\\\}
    v=${v//\"/\\\"}
    printf '%s="%s"\n' "${final_keys[$i]}" "$v"
  done
} >"$work/rebuilder.env"

# Receive buffer: the daemon asks for REBUILDER_RCVBUF_BYTES with SO_RCVBUF, which the kernel
# caps at net.core.rmem_max (socket(7)); raising the cap here lets the unit run without
# CAP_NET_ADMIN (SO_RCVBUFFORCE). A host already allowing more keeps its value.
rcvbuf=$(final REBUILDER_RCVBUF_BYTES)
[[ $rcvbuf =~ ^[0-9]+$ ]] || rcvbuf=$default_rcvbuf
if [ -z "$root" ] && [ -r /proc/sys/net/core/rmem_max ]; then
  current=$(cat /proc/sys/net/core/rmem_max)
  if [ "$current" -gt "$rcvbuf" ]; then rcvbuf=$current; fi
fi
printf '# mirrorfleet rebuilder (install.sh): the UDP receive buffer it asks for\nnet.core.rmem_max = %s\n' \
  "$rcvbuf" >"$work/sysctl.conf"

# CloudWatch agent: configuration rendered from the release's templates.
prom_config=/opt/aws/amazon-cloudwatch-agent/etc/mirrorfleet-prometheus.yaml
if [ "$cloudwatch" = 1 ]; then
  admin=$(final REBUILDER_ADMIN)
  [ -n "$admin" ] || admin=0.0.0.0:9445
  # The agent scrapes the admin listener; an unspecified bind address is reached on loopback.
  scrape=${admin/#0.0.0.0:/127.0.0.1:}
  scrape_re='^[][A-Za-z0-9.:-]+:[0-9]{1,5}$'
  [[ $scrape =~ $scrape_re ]] || die "cannot scrape the admin address $admin"
  render() {
    sed -e "s|@NAMESPACE@|$namespace|g" -e "s|@LOG_GROUP@|$log_group|g" \
      -e "s|@METRICS_LOG_GROUP@|$metrics_log_group|g" -e "s|@ASG_NAME@|$asg_name|g" \
      -e "s|@ADMIN_ADDR@|$scrape|g" -e "s|@PROMETHEUS_CONFIG@|$prom_config|g" "$1" >"$2"
    if grep -q '@[A-Z_]*@' "$2"; then die "unfilled placeholder in $1"; fi
  }
  agent_src=$(host_file cloudwatch-agent.json)
  prom_src=$(host_file cloudwatch-prometheus.yaml)
  export_src=$(host_file rebuilder-log-export.service)
  logrotate_src=$(host_file rebuilder.logrotate)
  render "$agent_src" "$work/agent.json"
  render "$prom_src" "$work/prometheus.yaml"
fi
if [ -n "$sources_uri" ]; then
  fetch_src=$(host_file fetch-sources.sh)
  service_src=$(host_file rebuilder-sources.service)
  timer_src=$(host_file rebuilder-sources.timer)
  printf 'MIRROR_SOURCES_S3_URI=%s\nREBUILDER_SOURCES_FILE=%s\n' "$sources_uri" "$sources_file" \
    >"$work/sources.env"
fi

# 5. Install.
changed=0 agent_changed=0 sources_changed=0 sysctl_changed=0
# install_file SRC DEST MODE: atomic replace, only when the content differs; returns 0 when it
# changed the file.
install_file() {
  local src=$1 dest=$2 mode=$3
  if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
    chmod "$mode" "$dest"
    return 1
  fi
  install -D -m "$mode" "$src" "$dest.new"
  mv -f "$dest.new" "$dest"
  log "installed $dest"
}
install_file "$new_bin" "$bin_dir/rebuilder" 0755 && changed=1
install_file "$unit_src" "$unit_dir/rebuilder.service" 0644 && changed=1
install_file "$work/rebuilder.env" "$env_file" 0600 && changed=1
install_file "$work/sysctl.conf" "$sysctl_file" 0644 && sysctl_changed=1
if [ "$cloudwatch" = 1 ]; then
  install_file "$work/agent.json" "$agent_dir/mirrorfleet-agent.json" 0644 && agent_changed=1
  install_file "$work/prometheus.yaml" "$root$prom_config" 0644 && agent_changed=1
  install_file "$export_src" "$unit_dir/rebuilder-log-export.service" 0644 && agent_changed=1
  install_file "$logrotate_src" "$root/etc/logrotate.d/mirrorfleet-rebuilder" 0644 || true
  # The journal export: readable by the agent's user (cwagent) and root only.
  mkdir -p "$log_dir"
  [ -f "$log_dir/rebuilder.log" ] || : >"$log_dir/rebuilder.log"
  chmod 0750 "$log_dir"
  chmod 0640 "$log_dir/rebuilder.log"
  if getent group cwagent >/dev/null 2>&1; then
    chgrp cwagent "$log_dir" "$log_dir/rebuilder.log"
  elif [ -z "$root" ]; then
    log "warning: no group cwagent (is amazon-cloudwatch-agent installed?): the agent cannot read $log_dir"
  fi
fi
if [ -n "$sources_uri" ]; then
  install_file "$fetch_src" "$libexec_dir/fetch-sources" 0755 && sources_changed=1
  install_file "$service_src" "$unit_dir/rebuilder-sources.service" 0644 && sources_changed=1
  install_file "$timer_src" "$unit_dir/rebuilder-sources.timer" 0644 && sources_changed=1
  install_file "$work/sources.env" "$env_dir/sources.env" 0644 && sources_changed=1
fi

# 6. Apply.
any_changed=$((changed | agent_changed | sources_changed | sysctl_changed))
if [ -n "$root" ]; then
  log "INSTALL_ROOT set: systemctl and sysctl skipped"
elif ! command -v systemctl >/dev/null || [ ! -d /run/systemd/system ]; then
  log "systemd is not running here: units installed but not enabled"
else
  if [ "$sysctl_changed" = 1 ]; then sysctl -q -p "$sysctl_file"; fi
  systemctl daemon-reload
  systemctl enable rebuilder.service >/dev/null 2>&1 || systemctl enable rebuilder.service
  if [ "$changed" = 1 ]; then
    systemctl try-restart rebuilder.service
  fi
  if [ -n "$sources_uri" ]; then
    systemctl enable --now rebuilder-sources.timer
    if [ "$sources_changed" = 1 ]; then systemctl start --no-block rebuilder-sources.service; fi
  fi
  if [ "$cloudwatch" = 1 ]; then
    systemctl enable rebuilder-log-export.service
    if [ "$agent_changed" = 1 ]; then systemctl restart rebuilder-log-export.service; fi
    if [ -x "$agent_ctl" ]; then
      if [ "$agent_changed" = 1 ] || ! systemctl is-active --quiet amazon-cloudwatch-agent; then
        "$agent_ctl" -a fetch-config -m ec2 -s -c "file:$agent_dir/mirrorfleet-agent.json" >/dev/null
      fi
    else
      log "warning: $agent_ctl not found: agent configuration written, agent not started"
    fi
  fi
fi
if [ "$any_changed" = 1 ]; then log "done (changed)"; else log "done (already up to date)"; fi
