#!/usr/bin/env bash
# The whole test suite: release build (warnings as errors) and ASan/UBSan build, each running
# every unit, parity and end-to-end test with ctest. Fetches the model and data first (cached).
# A kind that passes leaves no scratch files (build*/testtmp; SAFETUNE_KEEP_TESTTMP=1 keeps them).
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
  if (cd "$dir" && ctest --output-on-failure -j"$jobs" "${extra[@]}"); then
    # the tests' scratch files (checkpoints: several GB) go once the kind has passed
    [ -n "${SAFETUNE_KEEP_TESTTMP:-}" ] || { rm -rf "$dir/testtmp" && mkdir "$dir/testtmp"; }
  else
    status=1; echo "test.sh: $kind's scratch files kept in $dir/testtmp" >&2
  fi
done
exit $status
