#!/usr/bin/env bash
# run_eval_safety.sh - time `safetune eval safety` on AdvBench (N prompts x MAX_NEW tokens, greedy,
# batch 32, chat template) and the PyTorch reference (bench/bench_eval_safety.py: KV-cached static
# batches of 32 on tests/reference/llama_ref.py) on the same prompts, in one command.
# Target: 520 prompts x 128 tokens in <= 5 minutes for safetune.
# usage: bench/run_eval_safety.sh [SAFETUNE=build/safetune] [N=520] [MAX_NEW=128] [N_REF=N] [OUT=tmp]
# The reference runs at its best: all cores (torch.set_num_threads), OpenBLAS with the right
# OPENBLAS_CORETYPE when torch uses the system BLAS, fp32 and bf16 autocast.
set -euo pipefail
cd "$(dirname "$0")/.."
EXE=${1:-build/safetune}; N=${2:-520}; NEW=${3:-128}; NREF=${4:-$N}; OUT=${5:-}
MODEL=${SAFETUNE_MODEL_DIR:-models}/SmolLM2-135M-Instruct.Q4_1.gguf
DATA=${SAFETUNE_DATA_DIR:-data}
PY=${SAFETUNE_PYTHON:-.venv/bin/python}
if [ -z "$OUT" ]; then OUT=$(mktemp -d); trap 'rm -rf "$OUT"' EXIT; fi
mkdir -p "$OUT"

OB=""
for d in /usr/lib/x86_64-linux-gnu/openblas-pthread build/openblas/usr/lib/x86_64-linux-gnu/openblas-pthread; do
  [ -z "$OB" ] && [ -e "$d/libblas.so.3" ] && OB=$(cd "$d" && pwd)
done
[ -n "$OB" ] && export LD_LIBRARY_PATH="$OB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if grep -q avx512f /proc/cpuinfo; then
  if grep -q avx512_bf16 /proc/cpuinfo; then export OPENBLAS_CORETYPE=Cooperlake; else export OPENBLAS_CORETYPE=SkylakeX; fi
else export OPENBLAS_CORETYPE=Haswell; fi
echo "# CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; torch BLAS: ${OB:-torch default};" \
     "OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE; load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# AdvBench: $N prompts (chat template), $NEW new tokens, greedy, batch 32"

t0=$(date +%s.%N)
"$EXE" eval safety --model "$MODEL" --data-dir "$DATA" --benchmark advbench --limit "$N" --max-new-tokens "$NEW" \
  --batch-size 32 --quiet --out "$OUT/safety" > "$OUT/safety.txt"
t1=$(date +%s.%N)
TOK=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['settings']['generation']['completion_tokens'])" "$OUT/safety/summary.json")
"$PY" - "$t0" "$t1" "$TOK" "$N" > "$OUT/ours.json" <<'PYEOF'
import json, sys
t0, t1, tok, n = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
print(json.dumps({"config": "safetune (whole command: load + generate + score + write)", "prompts": n,
                  "tokens": tok, "seconds": round(t1 - t0, 2), "tok_per_s": round(tok / (t1 - t0), 2)}))
PYEOF
cat "$OUT/ours.json"; grep ASR "$OUT/safety.txt"

"$PY" bench/bench_eval_safety.py "$MODEL" "$DATA/advbench/harmful_behaviors.csv" --n "$NREF" --max-new-tokens "$NEW" \
  --compare "$OUT/safety/responses.jsonl" | tee "$OUT/ref32.json"
"$PY" bench/bench_eval_safety.py "$MODEL" "$DATA/advbench/harmful_behaviors.csv" --n "$NREF" --max-new-tokens "$NEW" \
  --bf16 | tee "$OUT/ref16.json"
"$PY" - "$OUT/ours.json" "$OUT/ref32.json" "$OUT/ref16.json" <<'PYEOF'
import json, sys
o, a, b = (json.loads(open(f).read().strip().splitlines()[-1]) for f in sys.argv[1:4])
print("safetune %.1f tok/s (%d prompts in %.1f s%s) | torch fp32 %.1f tok/s (ratio %.2fx) | torch bf16 autocast %.1f tok/s (ratio %.2fx)"
      % (o["tok_per_s"], o["prompts"], o["seconds"], ", target <= 300 s: %s" % ("MET" if o["seconds"] <= 300 else "MISSED")
         if o["prompts"] == 520 else "", a["tok_per_s"], o["tok_per_s"] / a["tok_per_s"], b["tok_per_s"], o["tok_per_s"] / b["tok_per_s"]))
print("greedy answers identical to torch fp32: %s" % a.get("identical_answers"))
PYEOF
