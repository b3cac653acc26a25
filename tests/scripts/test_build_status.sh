#!/usr/bin/env bash
# scripts/build.sh returns the build's own exit status: a source that does not compile fails it,
# even when a binary of an earlier, good build is still in build/ (it used to pass then: the
# compiler's output went through `grep ... || true` and only `test -x build/safetune` counted).
# Runs the real scripts/build.sh on a one-file project with the same layout.
# usage: test_build_status.sh REPO TMPDIR
set -euo pipefail
repo=$1; tmp=$2
rm -rf "$tmp"; mkdir -p "$tmp/scripts"
cp "$repo/scripts/build.sh" "$tmp/scripts/"
cat > "$tmp/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.20)
project(fake C)
option(SAFETUNE_WERROR "" OFF)
option(SAFETUNE_SANITIZE "" OFF)
add_executable(safetune main.c)
CM
fail() { echo "FAIL: $*" >&2; exit 1; }
echo 'int main(void) { return 0; }' > "$tmp/main.c"
bash "$tmp/scripts/build.sh" release > "$tmp/good.log" 2>&1 || { cat "$tmp/good.log"; fail "a good build failed"; }
grep -q "^built: build/safetune" "$tmp/good.log" || fail "no 'built:' line"
test -x "$tmp/build/safetune" || fail "no binary after a good build"

sleep 1   # a newer mtime than the object file, so make rebuilds
echo 'int main(void) { return this_does_not_compile; }' > "$tmp/main.c"
rc=0; bash "$tmp/scripts/build.sh" release > "$tmp/bad.log" 2>&1 || rc=$?
cat "$tmp/bad.log"
[ "$rc" -ne 0 ] || fail "build.sh exited 0 although main.c does not compile (old binary still there)"
grep -q "this_does_not_compile" "$tmp/bad.log" || fail "the compiler's error was not shown"
grep -q "build failed (build): cmake --build exited with status" "$tmp/bad.log" || fail "no 'build failed' line"
grep -q "^built:" "$tmp/bad.log" && fail "a failed build printed 'built:'"
echo "PASS: build.sh exit $rc on a source that does not compile (an older build/safetune present)"
