#!/usr/bin/env bash
# Install what dgrad needs to build and test, from Debian's packages.
# Only missing packages are installed; apt-get update runs only if needed.
# Usage: scripts/install_deps.sh [--bench]   (--bench adds PyTorch 1.13 for benchmarks and fixtures)
set -euo pipefail

pkgs=(build-essential cmake pkg-config libopenblas-dev zlib1g-dev libdnnl-dev
      libopenmpi-dev openmpi-bin libprotobuf-c-dev protobuf-c-compiler libmicrohttpd-dev libjansson-dev
      curl ca-certificates python3 time slurm-wlm munge iproute2 procps wrk)
[ "${1:-}" = "--bench" ] && pkgs+=(python3-torch python3-numpy)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install_deps: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
echo "install_deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
