#!/usr/bin/env bash
# A test whose inputs are missing is skipped locally and FAILS under SAFETUNE_REQUIRE_INPUTS=1
# (what .ci/run sets): both kinds, through the project's own machinery on a small project:
#   - a ctest test exiting 77 registered with SKIP_RETURN_CODE ${ST_SKIP_RETURN_CODE}
#     (cmake/require_inputs.cmake, as every parity test is);
#   - a cmocka test calling ST_SKIP_MISSING (tests/unit/testutil.h, as the unit tests do).
# Also: a passing test stays passed in both modes, "0" means unset, and a literal
# `SKIP_RETURN_CODE 77` under tests/ is refused at configure time.
# usage: test_require_inputs.sh REPO TMPDIR
set -euo pipefail
repo=$1; tmp=$2
rm -rf "$tmp"; mkdir -p "$tmp/src/sub"
fail() { echo "FAIL: $*" >&2; exit 1; }
cat > "$tmp/src/CMakeLists.txt" <<CM
cmake_minimum_required(VERSION 3.20)
project(req C)
include($repo/cmake/require_inputs.cmake)
enable_testing()
find_package(PkgConfig REQUIRED)
pkg_check_modules(CMOCKA REQUIRED IMPORTED_TARGET cmocka)
add_test(NAME parity_missing COMMAND sh -c "echo 'SKIP: model absent'; exit 77")
add_test(NAME parity_ok COMMAND sh -c "exit 0")
set_tests_properties(parity_missing parity_ok PROPERTIES SKIP_RETURN_CODE \${ST_SKIP_RETURN_CODE})
add_executable(unit_missing unit_missing.c)
target_include_directories(unit_missing PRIVATE $repo/tests/unit)
target_link_libraries(unit_missing PRIVATE PkgConfig::CMOCKA)
add_test(NAME unit_missing COMMAND unit_missing)
CM
cat > "$tmp/src/unit_missing.c" <<'C'
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <unistd.h>
#include "testutil.h"
static void test_real_input(void **state) {
    (void)state;
    const char *p = "/nonexistent/SmolLM2-135M-Instruct.Q4_1.gguf";
    if (access(p, R_OK) != 0) ST_SKIP_MISSING(p);
    fail_msg("unreachable");
}
static void test_plain(void **state) { (void)state; }
int main(void) {
    const struct CMUnitTest t[] = {cmocka_unit_test(test_real_input), cmocka_unit_test(test_plain)};
    return cmocka_run_group_tests(t, NULL, NULL);
}
C
b=$tmp/build
run_mode() {  # run_mode VALUE-OR-unset LOG: configure + build + ctest with that environment
  local v=$1 log=$2 rc=0
  if [ "$v" = unset ]; then set -- env -u SAFETUNE_REQUIRE_INPUTS; else set -- env SAFETUNE_REQUIRE_INPUTS="$v"; fi
  "$@" cmake -S "$tmp/src" -B "$b" > "$log" 2>&1 || { cat "$log"; fail "configure ($v)"; }
  "$@" cmake --build "$b" >> "$log" 2>&1 || { cat "$log"; fail "build ($v)"; }
  (cd "$b" && "$@" ctest -V) >> "$log" 2>&1 || rc=$?
  echo "== SAFETUNE_REQUIRE_INPUTS=$v: ctest exit $rc"; grep -E "Test +#|tests passed|SKIPPED|FAILED|missing input" "$log" || true
  return $rc
}
run_mode unset "$tmp/local.log" || fail "without SAFETUNE_REQUIRE_INPUTS a missing input must skip, not fail"
grep -qE "parity_missing .*Skipped" "$tmp/local.log" || fail "parity_missing not reported as skipped"
grep -q "\[  SKIPPED \] test_real_input" "$tmp/local.log" || fail "the cmocka test did not skip"
run_mode 0 "$tmp/zero.log" || fail "SAFETUNE_REQUIRE_INPUTS=0 must behave as unset"

rc=0; run_mode 1 "$tmp/ci.log" || rc=$?
[ $rc -ne 0 ] || fail "under SAFETUNE_REQUIRE_INPUTS=1 ctest passed although inputs are missing"
grep -qE "parity_missing .*\*\*\*Failed" "$tmp/ci.log" || fail "parity_missing (exit 77) is not a failure under SAFETUNE_REQUIRE_INPUTS=1"
grep -qE "unit_missing .*\*\*\*Failed" "$tmp/ci.log" || fail "the cmocka test is not a failure under SAFETUNE_REQUIRE_INPUTS=1"
grep -q "missing input: /nonexistent/SmolLM2-135M-Instruct.Q4_1.gguf" "$tmp/ci.log" || fail "the failure does not name the missing input"
grep -qE "parity_ok .*Passed" "$tmp/ci.log" || fail "a passing test must still pass under SAFETUNE_REQUIRE_INPUTS=1"

# A literal SKIP_RETURN_CODE 77 is refused, naming the file.
mkdir -p "$tmp/lit/tests/x"
printf 'set_tests_properties(t PROPERTIES SKIP_RETURN_CODE 77)\n' > "$tmp/lit/tests/x/CMakeLists.txt"
printf 'cmake_minimum_required(VERSION 3.20)\nproject(lit NONE)\ninclude(%s/cmake/require_inputs.cmake)\nst_check_skip_codes(${CMAKE_SOURCE_DIR}/tests)\n' "$repo" > "$tmp/lit/CMakeLists.txt"
if cmake -S "$tmp/lit" -B "$tmp/lit/build" > "$tmp/lit.log" 2>&1; then fail "a literal SKIP_RETURN_CODE 77 was accepted"; fi
grep -q "tests/x/CMakeLists.txt" "$tmp/lit.log" || { cat "$tmp/lit.log"; fail "the refusal does not name the file"; }
rm -rf "$tmp"
echo "PASS: missing inputs skip locally, fail under SAFETUNE_REQUIRE_INPUTS=1 (ctest exit $rc)"
