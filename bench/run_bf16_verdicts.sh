#!/usr/bin/env bash
# bf16 vs fp32 greedy verdicts on the study's evaluation prompts (AdvBench half B + XSTest half B,
# as `safetune align` lists them in DIR/eval_prompts.jsonl). Usage:
#   bench/run_bf16_verdicts.sh MODEL ALIGN_DIR OUT [MAX_NEW_TOKENS=64]
# Runs `safetune eval safety` twice (--precision fp32 and bf16) and prints bench/bf16_verdicts.py's
# counts (verdicts equal / texts identical per category) and the time of each run.
set -euo pipefail
cd "$(dirname "$0")/.."
model=$1 adir=$2 out=$3 nt=${4:-64}
mkdir -p "$out"
for p in fp32 bf16; do
  s=$(date +%s.%N)
  build/safetune eval safety --model "$model" --benchmark "jsonl:$adir/eval_prompts.jsonl" --max-new-tokens "$nt" \
    --batch-size 32 --precision "$p" --out "$out/$p" > "$out/$p.log" 2>&1
  echo "$p: $(python3 -c "print(round($(date +%s.%N) - $s, 1))") s"
done
python3 bench/bf16_verdicts.py "$out/fp32" "$out/bf16"
