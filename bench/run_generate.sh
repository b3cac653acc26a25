#!/usr/bin/env bash
# run_generate.sh - batched greedy generation throughput: safetune vs the PyTorch reference
# (bench/generate_ref.py, KV-cached batched loop on tests/reference/llama_ref.py), safetune in
# fp32 and bf16 (--precision) modes, torch in fp32 and bf16 autocast, same prompts
# (32 AdvBench goals, chat template), same 128 new tokens, batch 32, in one command.
# usage: bench/run_generate.sh [BUILD_DIR=build] [N_PROMPTS=32] [MAX_NEW=128]
# The reference runs at its best: all cores, OpenBLAS (not Debian's default netlib BLAS) with the
# right OPENBLAS_CORETYPE, fp32 and bf16 autocast.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}; NP=${2:-32}; NEW=${3:-128}
MODEL=${SAFETUNE_MODEL_DIR:-models}/SmolLM2-135M-Instruct.Q4_1.gguf
CSV=${SAFETUNE_DATA_DIR:-data}/advbench/harmful_behaviors.csv
PY=${SAFETUNE_PYTHON:-.venv/bin/python}
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT

# --- BLAS for torch: system OpenBLAS, else a private copy unpacked from Debian's package ---
. bench/torch_blas.sh
OB=$(find_openblas "$BUILD")
if [ -n "$OB" ]; then export LD_LIBRARY_PATH="$OB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
else echo "WARNING: no OpenBLAS found: torch uses netlib BLAS and the reference is far from its best" >&2; fi
# OpenBLAS kernel set for torch (unless set): the one with which the whole reference decode loop
# ran fastest here. A single-matmul probe (pick_coretype in torch_blas.sh) is NOT used: at 32 rows
# it preferred Haswell (171.6 vs 156.0 GFLOP/s), but the decode loop then ran at 199.1 tok/s vs
# 242.6 with Cooperlake (same quiet minutes, 2026-11-30).
if [ -z "${OPENBLAS_CORETYPE:-}" ]; then
  if grep -q avx512f /proc/cpuinfo; then
    if grep -q avx512_bf16 /proc/cpuinfo; then OPENBLAS_CORETYPE=Cooperlake; else OPENBLAS_CORETYPE=SkylakeX; fi
  else
    OPENBLAS_CORETYPE=Haswell
  fi
fi
export OPENBLAS_CORETYPE
# OpenMP threads that spin at barriers (libgomp's default) collapse on a shared, oversubscribed
# machine: 8.7 vs 31.7 tok/s measured here for safetune. Passive waiting for BOTH sides (torch's
# intra-op pool is libgomp too); override with OMP_WAIT_POLICY=active on a dedicated machine.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
echo "# CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores;" \
     "torch BLAS: ${OB:-netlib}; OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE; OMP_WAIT_POLICY=$OMP_WAIT_POLICY; load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# $NP AdvBench prompts (chat template), $NEW new tokens, greedy, batch 32"

"$BUILD/bench_generate" "$MODEL" "$CSV" "$NP" "$NEW" 32 "$TMP/ids.json" fp32 | tee "$TMP/ours.json"
"$BUILD/bench_generate" "$MODEL" "$CSV" "$NP" "$NEW" 32 "$TMP/ids16.json" bf16 | tee "$TMP/ours16.json"
"$PY" - "$TMP/ids.json" "$TMP/prompts.json" <<'PYEOF'
import json, sys
d = json.load(open(sys.argv[1])); json.dump(d["prompts"], open(sys.argv[2], "w"))
PYEOF
"$PY" bench/generate_ref.py "$MODEL" "$TMP/prompts.json" --max-new-tokens "$NEW" --stop 2 --out "$TMP/ref32.json" | tee "$TMP/ref32.out"
"$PY" bench/generate_ref.py "$MODEL" "$TMP/prompts.json" --max-new-tokens "$NEW" --stop 2 --bf16 | tee "$TMP/ref16.out"
"$PY" - "$TMP/ours.json" "$TMP/ours16.json" "$TMP/ref32.out" "$TMP/ref16.out" "$TMP/ids.json" "$TMP/ids16.json" "$TMP/ref32.json" <<'PYEOF'
import json, sys
o32, o16, r32, r16 = (json.loads(open(f).read().strip().splitlines()[-1]) for f in sys.argv[1:5])
a32 = json.load(open(sys.argv[5]))["completions"]; a16 = json.load(open(sys.argv[6]))["completions"]
b = json.load(open(sys.argv[7]))
for name, o in (("safetune fp32", o32), ("safetune bf16", o16)):
    print("%s %.1f tok/s | torch fp32 %.1f tok/s (ratio %.2fx) | torch bf16 autocast %.1f tok/s (ratio %.2fx)"
          % (name, o["tok_per_s"], r32["tok_per_s"], o["tok_per_s"] / r32["tok_per_s"], r16["tok_per_s"],
             o["tok_per_s"] / r16["tok_per_s"]))
for name, a in (("fp32", a32), ("bf16", a16)):
    same = sum(x == y for x, y in zip(a, b))
    print("safetune %s greedy outputs identical to torch fp32 for %d/%d prompts" % (name, same, len(a)))
PYEOF
