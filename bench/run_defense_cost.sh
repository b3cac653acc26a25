#!/bin/sh
# run_defense_cost.sh ALIGN_DIR [MODEL] [B=4] [T=256] [steps=4] [rounds=1] [rows=64] - wall-time
# multiplier of the training-step defenses (DEFENSES.md §4, §8; docs/defenses.md) over plain
# fine-tuning, in the same command: `safetune train` on the first `rows` Alpaca rows (the CSFT
# cache's θ0 pass covers them), AdamW without EMA (an EMA costs the same with or without a
# defense; left out to save memory on a shared machine), for plain FT,
# constrained SFT (--csft-beta 0.1), KL to θ0 (--kl-lambda 0.1) and EWC (--ewc-lambda 1, Fisher of
# ALIGN_DIR's 260 AdvBench half-a pairs), interleaved over `rounds` rounds (a shared machine's load
# drifts). Per run: the median step seconds of steps 2.. (step 1 warms oneDNN up), and the one-off
# θ0 pass (defense_setup_s: the CSFT cache, the Fisher) apart. ALIGN_DIR: a `safetune align --out`
# folder (align_set.jsonl, advbench_split.json); the texts are rendered with MODEL's template.
set -e
root=$(cd "$(dirname "$0")/.." && pwd)
align=${1:?usage: run_defense_cost.sh ALIGN_DIR [MODEL] [B] [T] [steps] [rounds] [rows]}
model=${2:-$root/models/SmolLM2-135M-Instruct.Q4_1.gguf}
B=${3:-4}; T=${4:-256}; steps=${5:-4}; rounds=${6:-1}; rows=${7:-64}
bin=${SAFETUNE_CLI:-$root/build/safetune}
data=${SAFETUNE_DATA_DIR:-$root/data}
py=${SAFETUNE_PYTHON:-python3}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "# CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; $B x $T, $steps steps, $rows rows"
for r in $(seq 1 "$rounds"); do
  for d in plain csft kl ewc; do
    case $d in
      plain) extra="" ;;
      csft) extra="--csft-beta 0.1" ;;
      kl) extra="--kl-lambda 0.1" ;;
      ewc) extra="--ewc-lambda 1 --align-dir $align" ;;
    esac
    echo "# round $r $d: load $(cut -d' ' -f1-3 /proc/loadavg)"
    # shellcheck disable=SC2086
    "$bin" train --model "$model" --data "$data/alpaca/alpaca_5000.json" --data-format alpaca --max-rows "$rows" \
      --out "$out/$d-$r" --batch-size "$B" --max-seq-len "$T" --max-steps "$steps" --lr 1e-5 --ema-decay none \
      --val-fraction 0 --save-weights live --export-dtype bf16 --quiet $extra 2>"$out/$d-$r.log" ||
      { echo "# $d-$r failed:"; tail -3 "$out/$d-$r.log"; }
    rm -rf "$out/$d-$r/final" "$out/$d-$r/checkpoints"
  done
done
"$py" - "$out" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
res = {}
for d in ("plain", "csft", "kl", "ewc"):
    step, setup = [], []
    for r in range(1, rounds + 1):
        try:
            rec = [json.loads(l) for l in open(f"{out}/{d}-{r}/metrics.jsonl")]
        except OSError:
            continue
        if len(rec) < 2:  # killed (out of memory?) before its steps
            continue
        step += [x["tokens"] / x["tokens_per_s"] for x in rec if x["step"] >= 2]
        setup += [x.get("defense_setup_s", 0.0) for x in rec if x["step"] == 1]
    if step:
        res[d] = (statistics.median(step), statistics.median(setup))
p = res["plain"][0]
for d, (s, u) in res.items():
    print(f"{d:6s} median step {s:7.3f} s  x{s / p:5.2f} of plain  one-off theta0 pass {u:7.2f} s "
          f"(= {u / p:5.1f} plain steps)")
PY
