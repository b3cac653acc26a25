#!/usr/bin/env bash
# Configure and build safetune. Usage: scripts/build.sh [release|asan]  (default release)
#   release -> build/       (-O3 -march=native, warnings as errors)
#   asan    -> build-asan/  (Debug, AddressSanitizer + UndefinedBehaviorSanitizer)
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-release}
jobs=$(nproc)
case "$kind" in
  release) dir=build; flags=(-DCMAKE_BUILD_TYPE=Release -DSAFETUNE_WERROR=ON) ;;
  asan) dir=build-asan; flags=(-DCMAKE_BUILD_TYPE=Debug -DSAFETUNE_WERROR=ON -DSAFETUNE_SANITIZE=ON) ;;
  *) echo "usage: scripts/build.sh [release|asan]" >&2; exit 2 ;;
esac
cmake -S . -B "$dir" "${flags[@]}" >/dev/null
cmake --build "$dir" -j"$jobs" 2>&1 | grep -v -E '^\[ *[0-9]+%\]|^Consolidate|^Scanning' || true
test -x "$dir/safetune" || { echo "build failed ($dir)" >&2; exit 1; }
echo "built: $dir/safetune"
