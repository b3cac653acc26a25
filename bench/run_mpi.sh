#!/bin/sh
# run_mpi.sh [MODEL] [B] [accum] [T] [steps] - data-parallel training over MPI (docs/mpi.md):
# `safetune train` on SmolLM2-135M and Alpaca rows at the same global batch (accum micro-batches
# of B rows, T tokens max) as 1 process x 2 threads and as `mpirun -np 2` x 1 thread, with
# --zero1 off and on, in one command. Prints per configuration: training tokens/s (steps 2..,
# from metrics.jsonl), peak RSS of each rank (/usr/bin/time), and the seconds per step in the
# gradient and weight collectives (SAFETUNE_PROFILE sections allreduce + allgather, per rank).
set -e
root=$(cd "$(dirname "$0")/.." && pwd)
model=${1:-$root/models/SmolLM2-135M-Instruct.Q4_1.gguf}
B=${2:-4}; A=${3:-2}; T=${4:-256}; steps=${5:-4}
cli=${SAFETUNE_CLI:-$root/build/safetune}
alpaca=${SAFETUNE_DATA_DIR:-$root/data}/alpaca/alpaca_5000.json
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
export SAFETUNE_PROFILE=1
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "# CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; $(mpirun --version | head -1)"
echo "# global batch: $A x $B rows, max $T tokens; $steps steps (the first untimed); load: $(cut -d' ' -f1-3 /proc/loadavg)"
args="train --model $model --data $alpaca --max-rows 400 --max-seq-len $T --batch-size $B --grad-accum $A
      --lr 1e-5 --max-steps $steps --save-every 0 --eval-every 0 --val-fraction 0 --ema-decay 0.99 --quiet"
report() { # name dir
  tps=$(python3 -c "import json,sys; r=[json.loads(l) for l in open('$2/run/metrics.jsonl')][1:]; \
print('%.0f' % (sum(x['tokens'] for x in r) / sum(x['tokens'] / x['tokens_per_s'] for x in r)))")
  rss=$(grep -o 'peak_rss_kib [0-9]*' "$2/log" | awk '{printf "%s%.0f MiB", sep, $2/1024; sep=", "}')
  comm=$(awk -v n=$((steps)) '/^profile safetune train rank/ {r=$5} /allreduce|allgather/ {c[r]+=$2} \
END {for (k in c) {printf "%srank %s %.3f s", sep, k, c[k]/n; sep=", "}}' "$2/log")
  printf '%-28s %8s tok/s   peak RSS per rank: %s   comm per step: %s\n' "$1" "$tps" "$rss" "${comm:-none}"
}
d=$out/one; mkdir -p $d
OMP_NUM_THREADS=2 /usr/bin/time -f "peak_rss_kib %M" $cli $args --out $d/run > $d/log 2>&1 || { cat $d/log; exit 1; }
report "N=1 x 2 threads" $d
for z in "" "--zero1"; do
  d=$out/two$z; mkdir -p $d
  OMP_NUM_THREADS=1 mpirun --oversubscribe --bind-to none -np 2 /usr/bin/time -f "peak_rss_kib %M" \
    $cli $args --out $d/run $z > $d/log 2>&1 || { cat $d/log; exit 1; }
  report "N=2 x 1 thread ${z:-(no ZeRO)}" $d
done
echo "# load: $(cut -d' ' -f1-3 /proc/loadavg)"
