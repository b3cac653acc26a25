#!/bin/sh
# run_lora_cli_1b.sh [WORK] - `safetune train --finetune lora --base-precision bf16` from the CLI on a
# random-weight Llama-3.2-1B-shaped Hugging Face folder (bf16 safetensors, bench/write_llama1b_hf.py),
# r 16 on all seven projections, batch 4 x 512 tokens, 2 steps, under /usr/bin/time -v: peak RSS
# (target 8 GB, issue 14) and the steps' tokens/s (WORK/run/metrics.jsonl). The base is loaded straight
# into bf16 (st_lora_base_load), so no fp32 copy of the model exists. Rows: Alpaca rows whose outputs
# are joined to over 3000 characters, so every row fills the 512 tokens. The tokenizer is SmolLM2's
# (an HF export of models/SmolLM2-135M-Instruct.Q4_1.gguf; its ids lie below the 128256 rows).
# Heavy (~7 GB, minutes a step on 2 cores): run it alone, once. WORK (default /tmp/safetune_lora_cli_1b)
# holds ~3 GB of inputs, reused by later runs.
set -eu
cd "$(dirname "$0")/.."
W=${1:-/tmp/safetune_lora_cli_1b}
PY=${PYTHON:-.venv/bin/python}
GGUF=models/SmolLM2-135M-Instruct.Q4_1.gguf
mkdir -p "$W"
[ -d "$W/tok" ] || build/safetune merge --base "$GGUF" --model "$GGUF" --merge linear:0 --out "$W/tok" --export-dtype bf16
[ -d "$W/llama1b" ] || nice -n 5 "$PY" bench/write_llama1b_hf.py "$W/llama1b" "$W/tok"
"$PY" - "$W/long.json" <<'PYEOF'
import json, sys
rows = json.load(open("data/alpaca/alpaca_5000.json"))
out, i = [], 0
while len(out) < 16:
    text = ""
    while len(text) < 3000:
        text += rows[i]["output"] + "\n\n"
        i += 1
    out.append({"instruction": "Write a long answer.", "input": "", "output": text})
json.dump(out, open(sys.argv[1], "w"))
PYEOF
echo "uptime before: $(uptime)"
nice -n 5 /usr/bin/time -v build/safetune train --model "$W/llama1b" --data "$W/long.json" --finetune lora \
    --lora-r 16 --lora-alpha 32 --lora-targets all --base-precision bf16 --batch-size 4 --max-seq-len 512 \
    --max-steps 2 --val-fraction 0 --out "$W/run" --overwrite 2>&1 |
    grep -E "safetune train|Maximum resident|Elapsed|Percent of CPU|Exit status"
echo "uptime after: $(uptime)"
cat "$W/run/metrics.jsonl"
