#!/usr/bin/env bash
# Idempotent set-up for `make test` and `make demo` on a Debian machine.
# Installs the apt packages and the Python venv the tests need; quick when already done
# (stamp files keyed on the package lists).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
stamp_dir="$root/.venv"
apt_pkgs=(tshark tcpdump iproute2 ethtool curl procps shellcheck openssl python3 python3-venv nginx-light)

need_apt=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$p")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing apt packages: ${need_apt[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  echo "wireshark-common wireshark-common/install-setuid boolean false" | "${sudo_cmd[@]}" debconf-set-selections
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # nginx is the tests' origin oracle, run on a port of their own: the service the package
  # starts (the default site on port 80) is not needed.
  if [[ " ${need_apt[*]} " == *" nginx-light "* ]] && command -v systemctl >/dev/null \
      && systemctl is-active --quiet nginx 2>/dev/null; then
    "${sudo_cmd[@]}" systemctl disable --now nginx >/dev/null 2>&1 || true
  fi
fi

req="$root/scripts/requirements-dev.txt"
want=$(sha256sum "$req" | cut -c1-16)
if [ ! -f "$stamp_dir/.stamp-$want" ]; then
  echo "setup: creating Python venv .venv with $(grep -cv '^#' "$req") tools"
  python3 -m venv "$stamp_dir"
  "$stamp_dir/bin/pip" install -q --upgrade pip
  "$stamp_dir/bin/pip" install -q -r "$req"
  rm -f "$stamp_dir"/.stamp-*
  touch "$stamp_dir/.stamp-$want"
fi
# cargo-fuzz for the fuzz smoke run of `make test` and for `make fuzz`.
cargo_fuzz_version=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -q "$cargo_fuzz_version"; then
  echo "setup: installing cargo-fuzz $cargo_fuzz_version"
  cargo install -q cargo-fuzz --locked --version "$cargo_fuzz_version"
fi
echo "setup: ok"
