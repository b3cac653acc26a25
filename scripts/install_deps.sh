#!/usr/bin/env bash
# Install the system packages and the Python reference venv safetune needs (Debian 12).
# Idempotent; needs root (or sudo) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."
PKGS=(build-essential cmake pkg-config libdnnl-dev ocl-icd-opencl-dev libpcre2-dev libutf8proc-dev libcjson-dev
      libcsv-dev libcmocka-dev libcurl4-openssl-dev libmicrohttpd-dev gnuplot-nox
      libopenmpi-dev openmpi-bin   # mpirun -np N safetune train|study (docs/mpi.md)
      python3 python3-venv python3-torch python3-numpy python3-pip
      libopenblas0-pthread    # torch 1.13 otherwise falls back to netlib BLAS (~50x slower)
      clang libclang-rt-14-dev libomp-dev)   # scripts/fuzz.sh only: libFuzzer, its sanitizers, OpenMP for clang
# ocl-icd-opencl-dev: Debian's dnnl-config.cmake calls find_package(OpenCL) REQUIRED, and
# libdnnl-dev only *recommends* it, which --no-install-recommends skips.
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  echo "installed: ${missing[*]}"
fi
bash scripts/setup_venv.sh
