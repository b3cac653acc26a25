#!/usr/bin/env bash
# The whole test suite: release build (warnings as errors) and ASan/UBSan build, each running
# every unit, parity and end-to-end test with ctest. Fetches the model and data first (cached).
# Needs scripts/install_deps.sh to have run once. Exit status is non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch_model.sh
bash scripts/fetch_tokenizers.sh
python3 scripts/fetch_data.py
jobs=$(nproc)
status=0
for kind in release asan; do
  dir=build; [ "$kind" = asan ] && dir=build-asan
  bash scripts/build.sh "$kind" || { status=1; continue; }
  echo "== ctest ($kind) =="
  # LABEL slow: too slow under the sanitizers (covered by the release run)
  extra=(); [ "$kind" = asan ] && extra=(-LE slow)
  (cd "$dir" && ctest --output-on-failure -j"$jobs" "${extra[@]}") || status=1
done
exit $status
