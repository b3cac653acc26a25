#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser of outside input (tests/fuzz, docs/fuzzing.md).
#   scripts/fuzz.sh                 CI: build build-fuzz/ (clang, libFuzzer + ASan/UBSan); per target,
#                                   replay its seeds and regression inputs, then fuzz FUZZ_SECONDS
#                                   (default 12) from the seeds; FUZZ_JOBS targets at a time (default
#                                   nproc, at most 2). A crash fails (exit 1) and its input is copied
#                                   to tests/fuzz/regressions/<target>/ (commit it with the fix).
#   scripts/fuzz.sh --long RUNS [TARGET...]
#                                   the long run: each target (default all) fuzzes RUNS inputs (e.g.
#                                   1000000), FUZZ_JOBS at a time (default 1); logs and a summary (executions,
#                                   coverage, crashes) in build-fuzz/long/. FUZZ_MAX_TIME=S caps each
#                                   target's time (then fewer than RUNS inputs may run).
# Needs clang, libclang-rt-14-dev and libomp-dev (scripts/install_deps.sh), the fetched model and data.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
long=0
if [ "${1:-}" = "--long" ]; then
  long=1; runs=${2:?usage: scripts/fuzz.sh --long RUNS [TARGET...]}; shift 2
fi
secs=${FUZZ_SECONDS:-12}
# FUZZ_SEED: libFuzzer's -seed for the short CI run (default 1, so a run's inputs depend on the code,
# not on the clock; 0 = a new random seed each run, as the long run uses)
seed=${FUZZ_SEED:-1}
jobs=${FUZZ_JOBS:-$(nproc)}; [ "$jobs" -gt 2 ] && [ -z "${FUZZ_JOBS:-}" ] && jobs=2
export SAFETUNE_MODEL_DIR=${SAFETUNE_MODEL_DIR:-$root/models} SAFETUNE_DATA_DIR=${SAFETUNE_DATA_DIR:-$root/data}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0} UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

command -v clang >/dev/null || { echo "fuzz: clang not found (scripts/install_deps.sh installs it)" >&2; exit 1; }
CC=clang cmake -S . -B build-fuzz -DSAFETUNE_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target fuzz_all >build-fuzz/build.log 2>&1 ||
  { grep -E 'error' build-fuzz/build.log | head -20; echo "fuzz: build failed (build-fuzz/build.log)" >&2; exit 1; }
targets=()
for f in tests/fuzz/fuzz_*.c; do
  n=$(basename "$f" .c); n=${n#fuzz_}
  [ "$n" = util ] && continue
  targets+=("$n")
done
[ $# -gt 0 ] && targets=("$@")
for t in "${targets[@]}"; do
  test -x "build-fuzz/tests/fuzz/fuzz_$t" || { echo "fuzz: build-fuzz/tests/fuzz/fuzz_$t was not built" >&2; exit 1; }
done

# dictionary per target (tests/fuzz/dict, made by tests/fuzz/make_seeds.py)
dict_of() {
  case "$1" in
    gguf|tokenizer_gguf) echo gguf ;;
    safetensors|safetensors_index|dataset|eval_responses) echo json ;;
    tokenizer_json) echo tokenizer ;;
    tokenizer_roundtrip) echo text ;;
    chat_template) echo chat ;;
    prompts) echo prompts ;;
    study_config) echo study ;;
    cli_config) echo cli ;;
    judge_reply) echo judge ;;
    serve) echo serve ;;
  esac
}

# longest input per target: the seeds' size (under 8 KB) with room to grow, where the cost of an input
# grows with its length (tokenizing, parsing a vocabulary) and longer inputs reach no new code;
# 64 KB elsewhere. FUZZ_MAX_LEN overrides it for every target.
max_len_of() {
  if [ -n "${FUZZ_MAX_LEN:-}" ]; then echo "$FUZZ_MAX_LEN"; return; fi
  case "$1" in
    tokenizer_json|dataset) echo 16384 ;;
    study_config|chat_template|tokenizer_roundtrip) echo 8192 ;;
    *) echo 65536 ;;
  esac
}

# fuzz one target; prints one summary line; returns 1 on a crash
run_target() {
  local t=$1 bin=build-fuzz/tests/fuzz/fuzz_$1 seeds=tests/fuzz/corpus/$1 reg=tests/fuzz/regressions/$1
  local work=build-fuzz/corpus/$t art=build-fuzz/artifacts/$t/ log
  rm -rf "$art"; mkdir -p "$work" "$art"
  local common=(-close_fd_mask=3 -timeout=60 -rss_limit_mb=2560 -max_len="$(max_len_of "$t")" -print_final_stats=1
                -artifact_prefix="$art")
  local d; d=$(dict_of "$t"); [ -n "$d" ] && common+=(-dict="tests/fuzz/dict/$d.dict")
  local dirs=("$seeds"); [ -d "$reg" ] && dirs+=("$reg")
  if [ $long = 1 ]; then
    mkdir -p build-fuzz/long; log=build-fuzz/long/$t.log
    local cap=(); [ -n "${FUZZ_MAX_TIME:-}" ] && cap=(-max_total_time="$FUZZ_MAX_TIME")
    "$bin" "${common[@]}" -runs="$runs" "${cap[@]}" "$work" "${dirs[@]}" >"$log" 2>&1 && rc=0 || rc=$?
  else
    mkdir -p build-fuzz/logs; log=build-fuzz/logs/$t.log
    # 1. replay every seed and regression input (a crash here is a regression)
    "$bin" "${common[@]}" -runs=0 "${dirs[@]}" >"$log" 2>&1 && rc=0 || rc=$?
    # 2. fuzz for a fixed time from the seeds (and what earlier runs found, kept in build-fuzz/corpus)
    if [ $rc = 0 ]; then
      "$bin" "${common[@]}" -seed="$seed" -max_total_time="$secs" "$work" "${dirs[@]}" >>"$log" 2>&1 && rc=0 || rc=$?
    fi
  fi
  local execs cov ft
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+' || true)
  ft=$(grep -oE 'ft: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+' || true)
  if [ $rc != 0 ]; then
    mkdir -p "$reg"
    local found=0 f
    for f in "$art"crash-* "$art"leak-* "$art"timeout-* "$art"oom-* "$art"slow-unit-*; do
      [ -e "$f" ] || continue
      cp "$f" "$reg/"; found=1
    done
    printf 'FAIL %-22s exit %s; log %s; inputs copied to %s (replay: %s %s/<file>)\n' "$t" "$rc" "$log" "$reg" "$bin" "$reg"
    [ $found = 1 ] || echo "     (no crashing input saved; see the log)"
    grep -E 'ERROR: |runtime error|fuzz invariant failed' "$log" | head -3 | sed 's/^/     /'
    return 1
  fi
  printf 'ok   %-22s %10s execs  cov %6s  ft %6s  corpus %s\n' "$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" \
         "$(ls "$work" | wc -l)"
}

status=0
if [ $long = 1 ]; then
  # FUZZ_JOBS targets at a time (default 1); each line: target, executions, coverage, seconds
  summary=build-fuzz/long/summary.txt; mkdir -p build-fuzz/long; : >"$summary"
  ljobs=${FUZZ_JOBS:-1}
  for t in "${targets[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$ljobs" ]; do sleep 1; done
    ( start=$(date +%s); line=$(run_target "$t") && rc=0 || rc=1
      echo "$line  $(( $(date +%s) - start )) s" | tee -a "$summary"; exit $rc ) &
  done
  for p in $(jobs -p); do wait "$p" || status=1; done
  exit $status
fi
echo "== fuzz: ${#targets[@]} targets, ${secs}s each, $jobs at a time =="
pids=(); names=()
for t in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do sleep 0.5; done
  (run_target "$t") > "build-fuzz/$t.summary" 2>&1 &
  pids+=($!); names+=("$t")
done
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || status=1
  cat "build-fuzz/${names[$i]}.summary"
done
exit $status
