#!/usr/bin/env bash
# No script, benchmark, test or source falls back to a folder of a development machine
# (/work/..., /home/..., /Users/...): data comes from data/ or $SAFETUNE_DATA_DIR, models from
# models/ or $SAFETUNE_MODEL_DIR, relative to the checkout.
# usage: test_no_dev_paths.sh REPO TMPDIR
set -euo pipefail
repo=$1
cd "$repo"
dirs=(bench scripts src include tests cmake .ci CMakeLists.txt)
hits=$(grep -rnIE '(^|[^A-Za-z0-9_.])/(work|home|Users)/' --exclude=test_no_dev_paths.sh -- "${dirs[@]}" || true)
if [ -n "$hits" ]; then
  echo "$hits"
  echo "FAIL: absolute paths of a development machine (use data/, models/, \$SAFETUNE_DATA_DIR, \$SAFETUNE_MODEL_DIR)" >&2
  exit 1
fi
echo "PASS: no development-machine paths under ${dirs[*]}"
