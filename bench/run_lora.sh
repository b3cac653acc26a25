#!/bin/sh
# run_lora.sh [MODEL|llama-1b] [B] [T] [steps] [r] [fp32|bf16] [base fp32|bf16] - LoRA training tokens/s and peak
# RSS: safetune (bench_lora) beside the PyTorch LoRA reference (lora_ref.py: llama_ref +
# set_lora, frozen base, AdamW on adapters) in the same command, same shapes, random tokens.
# Targets (issue 14): >= 1.5x the reference's tokens/s; llama-1b at 4 x 512 within 8 GB.
# Defaults: SmolLM2-135M-Instruct, 8 x 512, 2 steps (1 untimed warm-up), r 16, fp32, fp32 base.
# base bf16: the frozen base held in bf16 in both (safetune st_lora_base; torch bf16 tensors +
# autocast). SAFETUNE_LORA_REF=0 skips the PyTorch reference (e.g. when it does not fit in memory).
set -e
root=$(cd "$(dirname "$0")/.." && pwd)
model=${1:-$root/models/SmolLM2-135M-Instruct.Q4_1.gguf}
B=${2:-8}; T=${3:-512}; steps=${4:-2}; r=${5:-16}; prec=${6:-fp32}; base=${7:-fp32}
py=${SAFETUNE_PYTHON:-$root/.venv/bin/python}
bin=${BENCH_LORA:-$root/build/bench_lora}
: "${OMP_WAIT_POLICY:=passive}"
export OMP_WAIT_POLICY
. "$root/bench/torch_blas.sh"
ob=$(find_openblas "$root/build")
if [ -n "$ob" ]; then LD_LIBRARY_PATH="$ob${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; export LD_LIBRARY_PATH
else echo "WARNING: no OpenBLAS found: torch uses netlib BLAS" >&2; fi
if [ -z "$OPENBLAS_CORETYPE" ]; then
  OPENBLAS_CORETYPE=$(pick_coretype "$py" "$root/bench/gemm_probe.py" 1024)
  export OPENBLAS_CORETYPE
fi
echo "# CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$bin" "$model" "$B" "$T" "$steps" "$r" "$prec" "$base" | tee "$out/st.txt"
echo "# load: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "${SAFETUNE_LORA_REF:-1}" != 0 ]; then
  "$py" "$root/bench/lora_ref.py" "$model" "$B" "$T" "$steps" "$r" "$prec" "$base" | tee "$out/pt.txt" ||
    echo "lora_ref.py failed (killed for memory?)"
else
  echo "PyTorch reference skipped (SAFETUNE_LORA_REF=0)"; : > "$out/pt.txt"
fi
echo "# load: $(cut -d' ' -f1-3 /proc/loadavg)"
s=$(awk '/^safetune lora/ { print $(NF - 1) }' "$out/st.txt")
p=$(awk '/^pytorch lora/ { print $(NF - 1) }' "$out/pt.txt")
rs=$(awk '/^peak RSS/ { print $3 }' "$out/st.txt"); rp=$(awk '/^peak RSS/ { print $3 }' "$out/pt.txt")
awk -v a="${s:-0}" -v b="${p:-0}" -v ra="${rs:-0}" -v rb="${rp:-0}" 'BEGIN {
  printf "LoRA %s, %s base: safetune %.1f vs pytorch %.1f tokens/s -> %s (target 1.5x); peak RSS safetune %d MiB, pytorch %d MiB\n",
    "'"$prec"'", "'"$base"'", a, b, (a > 0 && b > 0) ? sprintf("%.2fx", a / b) : "n/a", ra, rb }'
