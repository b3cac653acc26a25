#!/usr/bin/env bash
# SAFETUNE_WERROR defaults to ON: configuring the project with plain `cmake -S . -B DIR` (as a user
# might, without scripts/build.sh) makes warnings errors.
# usage: test_werror_default.sh REPO TMPDIR
set -euo pipefail
repo=$1; tmp=$2
rm -rf "$tmp"
cmake -S "$repo" -B "$tmp" > "$tmp.log" 2>&1 || { cat "$tmp.log"; echo "FAIL: configure failed" >&2; exit 1; }
line=$(grep '^SAFETUNE_WERROR:' "$tmp/CMakeCache.txt" || true)
rm -rf "$tmp" "$tmp.log"
[ "$line" = "SAFETUNE_WERROR:BOOL=ON" ] || { echo "FAIL: default configure gives '$line', want SAFETUNE_WERROR:BOOL=ON" >&2; exit 1; }
echo "PASS: $line"
