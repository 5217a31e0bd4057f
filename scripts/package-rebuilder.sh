#!/usr/bin/env bash
# Builds the rebuilder release tarball that the stack's user data installs:
#   rebuilder-x86_64-linux.tar.gz
#     rebuilder          release binary (x86_64, runs on Amazon Linux 2023: glibc <= 2.34)
#     install.sh         deploy/install.sh (verifies this tarball, writes the env file, enables the unit)
#     rebuilder.service  deploy/rebuilder.service (systemd unit)
#     ...                every other file of deploy/: the CloudWatch agent configuration, the journal
#                        export unit, the source-map refresh timer (install.sh installs what is asked)
#
# Usage: scripts/package-rebuilder.sh [--no-build] [--out DIR]
#   --no-build  package target/release/rebuilder as it is (make build has just built it)
#   --out DIR   where to write the tarball (default: dist/)
# Honours CARGO_TARGET_DIR. Prints the tarball path and its sha256.
# Upload it with: aws s3 cp dist/rebuilder-x86_64-linux.tar.gz s3://BUCKET/KEY
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

build=1
out="$root/dist"
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) build=0; shift ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "package-rebuilder: unknown argument $1" >&2; exit 2 ;;
  esac
done

target_dir=${CARGO_TARGET_DIR:-$root/target}
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac
bin="$target_dir/release/rebuilder"
# Amazon Linux 2023 ships glibc 2.34: a binary needing newer symbols would not start there.
max_glibc=2.34

if [ "$build" = 1 ]; then
  cargo build --release --locked -p rebuilder
fi

fail() { echo "package-rebuilder: $*" >&2; exit 1; }
[ -x "$bin" ] || fail "$bin not found (run: cargo build --release -p rebuilder)"
for f in deploy/install.sh deploy/rebuilder.service; do
  [ -f "$f" ] || fail "$f not found"
done
mapfile -t host_files < <(find deploy -maxdepth 1 -type f -printf '%f\n' | LC_ALL=C sort)

# ELF header: class 2 (64-bit) at byte 4, e_machine 0x3e (x86-64) at bytes 18-19.
header=$(od -An -tx1 -N20 "$bin" | tr -d ' \n')
[ "${header:0:8}" = 7f454c46 ] || fail "$bin is not an ELF file"
if [ "${header:8:2}" != 02 ] || [ "${header:36:4}" != 3e00 ]; then fail "$bin is not an x86_64 binary"; fi

if command -v objdump >/dev/null 2>&1; then
  needed=$(objdump -T "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n1 || true)
  if [ -n "$needed" ] && [ "$(printf '%s\n%s\n' "$needed" "$max_glibc" | sort -V | tail -n1)" != "$max_glibc" ]; then
    fail "$bin needs glibc $needed, Amazon Linux 2023 has $max_glibc; build it on an older glibc or with
  cargo zigbuild --release -p rebuilder --target x86_64-unknown-linux-gnu.$max_glibc"
  fi
else
  echo "package-rebuilder: objdump not found, glibc version of $bin not checked" >&2
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
install -m 0755 "$bin" "$stage/rebuilder"
for f in "${host_files[@]}"; do
  case "$f" in
    *.sh) install -m 0755 "deploy/$f" "$stage/$f" ;;
    *) install -m 0644 "deploy/$f" "$stage/$f" ;;
  esac
done

mkdir -p "$out"
tarball="$out/rebuilder-x86_64-linux.tar.gz"
# Reproducible: fixed order, owner and mtime.
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime='@0' \
  -C "$stage" -cf - rebuilder "${host_files[@]}" | gzip -n -9 >"$tarball.tmp"
mv "$tarball.tmp" "$tarball"

listing=$(tar -tzf "$tarball" | LC_ALL=C sort | tr '\n' ' ')
expected=$(printf '%s\n' rebuilder "${host_files[@]}" | LC_ALL=C sort | tr '\n' ' ')
[ "$listing" = "$expected" ] || fail "unexpected tarball content: $listing"
echo "$tarball"
sha256sum "$tarball"
