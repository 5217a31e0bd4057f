#!/usr/bin/env bash
# Installs (or updates) the mirrorfleet rebuilder on a host: binary, systemd unit, env file.
#
# Usage:
#   install.sh --artifact URI [--upstream URL] [--listen ADDR] [--admin ADDR] [--env KEY=VAL]...
#
#   --artifact URI   https:// URL, s3:// URI (needs the aws cli) or local path of either
#                    a tarball holding `rebuilder` (and normally `install.sh`, `rebuilder.service`)
#                    or a bare `rebuilder` binary
#   --upstream URL   analyzer URL            -> REBUILDER_UPSTREAM
#   --listen ADDR    UDP listen address(es)  -> REBUILDER_LISTEN
#   --admin ADDR     admin listener          -> REBUILDER_ADMIN
#   --env KEY=VAL    any other variable (repeatable), e.g. --env REBUILDER_WORKERS=4
#
# Idempotent: running it again with the same arguments changes nothing; values not given again
# are kept from the existing /etc/mirrorfleet/rebuilder.env. Enables rebuilder.service and
# restarts it if it is running (the caller starts it the first time).
# INSTALL_ROOT=/some/dir installs under that directory and skips systemctl (tests, images).
set -euo pipefail

root=${INSTALL_ROOT:-}
bin_dir="$root/usr/local/bin"
unit_dir="$root/etc/systemd/system"
env_dir="$root/etc/mirrorfleet"
env_file="$env_dir/rebuilder.env"
self_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

die() { echo "install.sh: $*" >&2; exit 1; }
log() { echo "install.sh: $*" >&2; }
usage() { sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

artifact=""
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

while [ $# -gt 0 ]; do
  case "$1" in
    --artifact) [ $# -ge 2 ] || die "--artifact needs a value"; artifact=$2; shift 2 ;;
    --upstream) [ $# -ge 2 ] || die "--upstream needs a value"; set_var REBUILDER_UPSTREAM "$2"; shift 2 ;;
    --listen) [ $# -ge 2 ] || die "--listen needs a value"; set_var REBUILDER_LISTEN "$2"; shift 2 ;;
    --admin) [ $# -ge 2 ] || die "--admin needs a value"; set_var REBUILDER_ADMIN "$2"; shift 2 ;;
    --env)
      [ $# -ge 2 ] || die "--env needs KEY=VAL"
      [[ $2 == *=* ]] || die "--env wants KEY=VAL, got: $2"
      set_var "${2%%=*}" "${2#*=}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
[ -n "$artifact" ] || die "--artifact is required (see --help)"

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
    aws s3 cp --only-show-errors "$artifact" "$fetched" || die "cannot copy $artifact"
    ;;
  http://*) die "refusing plain http for the artifact: use https:// or s3://" ;;
  *://*) die "unsupported artifact scheme: $artifact" ;;
  *)
    [ -f "$artifact" ] || die "no such file: $artifact"
    cp "$artifact" "$fetched"
    ;;
esac

# 2. Unpack: a tarball holding `rebuilder`, or the bare binary.
unit_src=""
if tar -tzf "$fetched" >/dev/null 2>&1 || tar -tf "$fetched" >/dev/null 2>&1; then
  mkdir "$work/x"
  tar -xf "$fetched" -C "$work/x" || die "cannot unpack $artifact"
  new_bin=$(find "$work/x" -type f -name rebuilder | head -n 1)
  [ -n "$new_bin" ] || die "$artifact holds no file named rebuilder"
  unit_src=$(find "$work/x" -type f -name rebuilder.service | head -n 1)
elif [ "$(head -c 4 "$fetched" | od -An -c | tr -d ' ')" = '177ELF' ]; then
  new_bin=$fetched
else
  die "$artifact is neither a tarball nor an ELF binary"
fi
if [ -z "$unit_src" ] && [ -f "$self_dir/rebuilder.service" ]; then
  unit_src="$self_dir/rebuilder.service"
fi
[ -n "$unit_src" ] || die "no rebuilder.service in the artifact nor beside install.sh"
chmod 0755 "$new_bin"
"$new_bin" run --help >/dev/null 2>&1 || die "the artifact's rebuilder does not run on this host"

changed=0
# install_file SRC DEST MODE: atomic replace, only when the content differs.
install_file() {
  local src=$1 dest=$2 mode=$3
  if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
    chmod "$mode" "$dest"
    return
  fi
  install -D -m "$mode" "$src" "$dest.new"
  mv -f "$dest.new" "$dest"
  changed=1
  log "installed $dest"
}

# 3. Binary and unit.
install_file "$new_bin" "$bin_dir/rebuilder" 0755
install_file "$unit_src" "$unit_dir/rebuilder.service" 0644

# 4. Env file: existing values kept unless given again.
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
have_upstream=0
for k in "${final_keys[@]}"; do [ "$k" = REBUILDER_UPSTREAM ] && have_upstream=1; done
[ "$have_upstream" = 1 ] || die "no upstream: pass --upstream URL (none in $env_file yet)"

tmp_env="$work/rebuilder.env"
{
  echo "# mirrorfleet rebuilder settings, written by install.sh (rebuilder run --help lists them all)"
  for i in "${!final_keys[@]}"; do
    v=${final_vals[$i]}
    v=${v//\\/\\\\}
    v=${v//\"/\\\"}
    printf '%s="%s"\n' "${final_keys[$i]}" "$v"
  done
} >"$tmp_env"
mkdir -p "$env_dir"
install_file "$tmp_env" "$env_file" 0600

# 5. systemd.
if [ -n "$root" ]; then
  log "INSTALL_ROOT set: systemctl skipped"
elif ! command -v systemctl >/dev/null || [ ! -d /run/systemd/system ]; then
  log "systemd is not running here: unit installed but not enabled"
else
  systemctl daemon-reload
  systemctl enable rebuilder.service >/dev/null 2>&1 || systemctl enable rebuilder.service
  if [ "$changed" = 1 ]; then
    systemctl try-restart rebuilder.service
  fi
fi
if [ "$changed" = 1 ]; then log "done (changed)"; else log "done (already up to date)"; fi
