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
# The build's own exit status decides (a failed rebuild must not pass on the binary of an older one);
# the filter only hides progress lines, and its status (1 when it printed nothing) does not count.
rc=0
cmake --build "$dir" -j"$jobs" 2>&1 | { grep -v -E '^\[ *[0-9]+%\]|^Consolidate|^Scanning' || true; } || rc=${PIPESTATUS[0]}
if [ "$rc" -ne 0 ]; then echo "build failed ($dir): cmake --build exited with status $rc" >&2; exit "$rc"; fi
test -x "$dir/safetune" || { echo "build failed ($dir): no $dir/safetune" >&2; exit 1; }
echo "built: $dir/safetune"
