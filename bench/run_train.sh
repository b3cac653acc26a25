#!/bin/sh
# run_train.sh [MODEL] [B] [T] [steps] - training tokens/s: safetune (fp32, bf16 matmuls) vs
# PyTorch (llama_ref + AdamW, fp32 and bf16 autocast) in the same command, on two batch
# configurations with identical token ids on both sides (bench_train writes them, train_ref.py
# reads them): "random" (random tokens, every position trained) and "alpaca" (Alpaca rows in
# the chat template, loss on assistant tokens only, packed into B rows of T tokens). Prints the
# ratios and safetune's peak RSS. Targets: safetune >= 1.5x PyTorch in both precisions.
# steps counts the untimed warm-up step: the default 2 = 1 warm-up + 1 timed step per run,
# so the whole bench takes several minutes at 8 x 512 on 2 cores.
set -e
root=$(cd "$(dirname "$0")/.." && pwd)
model=${1:-$root/models/SmolLM2-135M-Instruct.Q4_1.gguf}
B=${2:-8}; T=${3:-512}; steps=${4:-2}
py=${SAFETUNE_PYTHON:-$root/.venv/bin/python}
bin=${BENCH_TRAIN:-$root/build/bench_train}
alpaca=${SAFETUNE_DATA_DIR:-$root/data}/alpaca/alpaca_5000.json
# Both runs use passive OpenMP waiting: on a machine shared with other jobs, spinning threads
# burn the cores the other threads need (measured: fp32 step 10-25% faster here).
: "${OMP_WAIT_POLICY:=passive}"
export OMP_WAIT_POLICY
# PyTorch 1.13 from Debian does fp32 GEMM through libblas.so.3: make sure that is OpenBLAS
# (the system's openblas-pthread, else a private copy of Debian's package, as run_generate.sh),
# not the netlib reference BLAS (~50x slower). bf16 autocast goes to oneDNN.
. "$root/bench/torch_blas.sh"
ob=$(find_openblas "$root/build")
if [ -n "$ob" ]; then LD_LIBRARY_PATH="$ob${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; export LD_LIBRARY_PATH
else echo "WARNING: no OpenBLAS found: torch uses netlib BLAS and the reference is far from its best" >&2; fi
# OpenBLAS picks kernels per OPENBLAS_CORETYPE; unless set, time a plain torch.mm with each
# candidate the CPU supports and keep the fastest.
if [ -z "$OPENBLAS_CORETYPE" ]; then
  OPENBLAS_CORETYPE=$(pick_coretype "$py" "$root/bench/gemm_probe.py" 1024)
  export OPENBLAS_CORETYPE
fi
echo "# CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; torch BLAS: ${ob:-netlib};" \
     "OMP_WAIT_POLICY=$OMP_WAIT_POLICY OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE; load: $(cut -d' ' -f1-3 /proc/loadavg)"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$bin" "$model" "$B" "$T" "$steps" "$alpaca" "$out" | tee "$out/st.txt"
echo "# load: $(cut -d' ' -f1-3 /proc/loadavg)"
"$py" "$root/bench/train_ref.py" "$model" "$B" "$T" "$steps" "$out" | tee "$out/pt.txt" ||
  echo "train_ref.py failed (killed for memory?)"
echo "# load: $(cut -d' ' -f1-3 /proc/loadavg)"
get() { awk -v k="$2" 'index($0, k) == 1 { print $(NF - 1) }' "$out/$1"; }
for cfg in random alpaca; do
  share=$(awk -v c="$cfg" '$1 == "config" && $2 == c":" { sub(/,$/, "", $8); print $3 " of " $5 " positions trained " $8 }' "$out/st.txt")
  s32=$(get st.txt "safetune fp32 $cfg:"); s16=$(get st.txt "safetune bf16 $cfg:")
  p32=$(get pt.txt "pytorch fp32 $cfg:"); p16=$(get pt.txt "pytorch bf16-autocast $cfg:")
  echo "== $cfg ($share)"
  awk -v a="${s32:-0}" -v b="${p32:-0}" -v c="${s16:-0}" -v d="${p16:-0}" '
    function ratio(x, y) { return x > 0 && y > 0 ? sprintf("%.2fx", x / y) : "n/a (a run failed)" }
    BEGIN {
    printf "fp32: safetune %.1f vs pytorch %.1f tokens/s -> %s (target 1.5x)\n", a, b, ratio(a, b);
    printf "bf16: safetune %.1f vs pytorch bf16-autocast %.1f tokens/s -> %s (target 1.5x)\n", c, d, ratio(c, d) }'
done
grep '^peak RSS' "$out/st.txt"
