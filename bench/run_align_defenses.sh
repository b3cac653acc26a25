#!/bin/sh
# run_align_defenses.sh [MODEL] [B=4] [T=256] [steps=10] - wall-time multiplier of Lisa and
# SafeGrad (DEFENSES.md §6, §7) over plain fine-tuning, measured in the same command on the same
# start, data and settings: `safetune align` (1 step, only to produce the alignment set and an
# aligned folder), then `safetune train` plain, --lisa on, --safegrad on, in turn (ABC, then
# CBA, to spread the machine's load drift). Time = Σ step_s (tokens / tokens_per_s of
# metrics.jsonl) over steps 2..N (step 1 untimed); eval off.
# Defaults: SmolLM2-135M-Instruct, Alpaca, batch 4 x 256 tokens, 10 steps, fp32.
set -e
root=$(cd "$(dirname "$0")/.." && pwd)
model=${1:-$root/models/SmolLM2-135M-Instruct.Q4_1.gguf}
B=${2:-4}; T=${3:-256}; steps=${4:-10}
cli=${SAFETUNE_CLI:-$root/build/safetune}
data=${SAFETUNE_DATA_DIR:-$root/data}
py=${SAFETUNE_PYTHON:-$root/.venv/bin/python}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "# CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"
"$cli" align --model "$model" --out "$out/al" --data-dir "$data" --n-alpaca 8 --max-steps 1 --batch-size 2 \
  --max-seq-len 64 --no-eval --quiet >"$out/align.log" 2>&1 || { tail -3 "$out/align.log" >&2; exit 1; }
run() { # name extra...
  name=$1; shift
  "$cli" train --model "$out/al/aligned" --data "$data/alpaca/alpaca_5000.json" --data-format alpaca \
    --out "$out/$name" --max-rows 400 --max-seq-len "$T" --batch-size "$B" --max-steps "$steps" --lr 1e-5 \
    --ema-decay 0.99 --val-fraction 0 --save-weights live --quiet "$@" >"$out/$name.log" 2>&1 ||
    { echo "$name: safetune train failed:" >&2; tail -3 "$out/$name.log" >&2; return 1; }
  "$py" - "$out/$name/metrics.jsonl" "$name" <<'PY'
import json, sys
r = [json.loads(l) for l in open(sys.argv[1])]
r = [x for x in r if x["step"] >= 2 and x.get("tokens_per_s")]
print(sys.argv[2], sum(x["tokens"] / x["tokens_per_s"] for x in r), len(r))
PY
  rm -rf "$out/$name"
}
for order in abc cba; do
  for k in $(echo $order | fold -w1); do
    case $k in
      a) run plain ;;
      b) run lisa --lisa on ;;
      c) run safegrad --safegrad on ;;
    esac
  done
done | tee "$out/times.txt"
echo "# load: $(cut -d' ' -f1-3 /proc/loadavg)"
"$py" - "$out/times.txt" <<'PY'
import sys
t = {}
for line in open(sys.argv[1]):
    name, s, n = line.split()
    t.setdefault(name, []).append(float(s))
base = sum(t["plain"])
for name in ("plain", "lisa", "safegrad"):
    print(f"{name:9s} {sum(t[name]):8.2f} s over 2 x (steps 2..N)   x{sum(t[name]) / base:.2f} of plain fine-tuning")
PY
