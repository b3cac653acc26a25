#!/bin/sh
# run_train.sh [MODEL] [B] [T] [steps] - training tokens/s: safetune (fp32, bf16 matmuls) vs
# PyTorch (llama_ref + AdamW, fp32 and bf16 autocast) in the same command, plus ratios and
# safetune's peak RSS. Targets: safetune >= 1.5x PyTorch in both precisions.
set -e
root=$(cd "$(dirname "$0")/.." && pwd)
model=${1:-$root/models/SmolLM2-135M-Instruct.Q4_1.gguf}
B=${2:-8}; T=${3:-512}; steps=${4:-3}
py=${SAFETUNE_PYTHON:-$root/.venv/bin/python}
bin=${BENCH_TRAIN:-$root/build/bench_train}
# Debian's OpenBLAS picks kernels per OPENBLAS_CORETYPE: AVX-512 BF16 -> COOPERLAKE,
# AVX-512 -> SKYLAKEX, AVX2 -> HASWELL (AMD Zen 4 has AVX-512 + BF16).
if [ -z "$OPENBLAS_CORETYPE" ]; then
  if grep -q avx512_bf16 /proc/cpuinfo; then OPENBLAS_CORETYPE=COOPERLAKE
  elif grep -q avx512f /proc/cpuinfo; then OPENBLAS_CORETYPE=SKYLAKEX
  elif grep -q avx2 /proc/cpuinfo; then OPENBLAS_CORETYPE=HASWELL; fi
  export OPENBLAS_CORETYPE
fi
out=$(mktemp -d)
"$bin" "$model" "$B" "$T" "$steps" | tee "$out/st.txt"
"$py" "$root/bench/train_ref.py" "$model" "$B" "$T" "$steps" | tee "$out/pt.txt"
s32=$(awk '/^safetune fp32:/{print $3}' "$out/st.txt"); s16=$(awk '/^safetune bf16:/{print $3}' "$out/st.txt")
p32=$(awk '/^pytorch fp32:/{print $3}' "$out/pt.txt"); p16=$(awk '/^pytorch bf16-autocast:/{print $3}' "$out/pt.txt")
awk -v a="$s32" -v b="$p32" -v c="$s16" -v d="$p16" 'BEGIN {
  printf "fp32: safetune %.1f vs pytorch %.1f tokens/s -> %.2fx (target 1.5x)\n", a, b, a / b;
  printf "bf16: safetune %.1f vs pytorch bf16-autocast %.1f tokens/s -> %.2fx (target 1.5x)\n", c, d, c / d }'
rm -rf "$out"
