#!/bin/sh
# run_train.sh [MODEL] [B] [T] [steps] - training tokens/s: safetune (fp32, bf16 matmuls) vs
# PyTorch (llama_ref + AdamW, fp32 and bf16 autocast) in the same command, plus ratios and
# safetune's peak RSS. Targets: safetune >= 1.5x PyTorch in both precisions.
# steps counts the untimed warm-up step: the default 2 = 1 warm-up + 1 timed step per config,
# so the whole bench takes a few minutes at 8 x 512 on 2 shared cores.
set -e
root=$(cd "$(dirname "$0")/.." && pwd)
model=${1:-$root/models/SmolLM2-135M-Instruct.Q4_1.gguf}
B=${2:-8}; T=${3:-512}; steps=${4:-2}
py=${SAFETUNE_PYTHON:-$root/.venv/bin/python}
bin=${BENCH_TRAIN:-$root/build/bench_train}
# Both runs use passive OpenMP waiting: on a machine shared with other jobs, spinning threads
# burn the cores the other threads need (measured: fp32 step 10-25% faster here).
: "${OMP_WAIT_POLICY:=passive}"
export OMP_WAIT_POLICY
# PyTorch 1.13 from Debian does fp32 GEMM in OpenBLAS (BLAS_INFO=generic -> libblas.so.3 =
# openblas-pthread; bf16 autocast goes to oneDNN). OpenBLAS picks kernels per
# OPENBLAS_CORETYPE; unless set, time a plain torch.mm with each candidate the CPU supports
# and keep the fastest.
if [ -z "$OPENBLAS_CORETYPE" ]; then
  cands=HASWELL
  grep -q avx512f /proc/cpuinfo && cands="SKYLAKEX $cands"
  grep -q avx512_bf16 /proc/cpuinfo && cands="COOPERLAKE $cands"
  grep -q amx_bf16 /proc/cpuinfo && cands="SAPPHIRERAPIDS $cands"
  best=0
  for c in $cands; do
    g=$(OPENBLAS_CORETYPE=$c "$py" "$root/bench/gemm_probe.py" 2>/dev/null || echo 0)
    echo "torch.mm fp32 [1024x576]x[576x3072] with OPENBLAS_CORETYPE=$c: $g GFLOP/s"
    if awk -v a="$g" -v b="$best" 'BEGIN { exit !(a > b) }'; then best=$g; OPENBLAS_CORETYPE=$c; fi
  done
  export OPENBLAS_CORETYPE
fi
echo "OMP_WAIT_POLICY=$OMP_WAIT_POLICY OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE; load: $(cut -d' ' -f1-3 /proc/loadavg)"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$bin" "$model" "$B" "$T" "$steps" | tee "$out/st.txt"
"$py" "$root/bench/train_ref.py" "$model" "$B" "$T" "$steps" | tee "$out/pt.txt" ||
  echo "train_ref.py failed (killed for memory?)"
s32=$(awk '/^safetune fp32:/{print $3}' "$out/st.txt"); s16=$(awk '/^safetune bf16:/{print $3}' "$out/st.txt")
p32=$(awk '/^pytorch fp32:/{print $3}' "$out/pt.txt"); p16=$(awk '/^pytorch bf16-autocast:/{print $3}' "$out/pt.txt")
awk -v a="${s32:-0}" -v b="${p32:-0}" -v c="${s16:-0}" -v d="${p16:-0}" '
  function ratio(x, y) { return y > 0 ? sprintf("%.2fx", x / y) : "n/a (a run failed)" }
  BEGIN {
  printf "fp32: safetune %.1f vs pytorch %.1f tokens/s -> %s (target 1.5x)\n", a, b, ratio(a, b);
  printf "bf16: safetune %.1f vs pytorch bf16-autocast %.1f tokens/s -> %s (target 1.5x)\n", c, d, ratio(c, d) }'
grep '^peak RSS' "$out/st.txt"
