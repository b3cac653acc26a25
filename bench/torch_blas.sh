# torch_blas.sh - sourced by run_generate.sh and run_train.sh (POSIX sh).
# find_openblas BUILD_DIR: prints the folder holding OpenBLAS's libblas.so.3 for torch 1.13 from
# Debian (which otherwise uses the netlib reference BLAS, ~50x slower here): the system's
# openblas-pthread, else a private copy of Debian's libopenblas0-pthread unpacked into
# BUILD_DIR/openblas (apt-get download + dpkg -x, no system change). Prints nothing if neither.
find_openblas() {
  _ob_sub=usr/lib/x86_64-linux-gnu/openblas-pthread
  for _ob_d in /usr/lib/x86_64-linux-gnu/openblas-pthread "$1/openblas/$_ob_sub"; do
    if [ -e "$_ob_d/libblas.so.3" ]; then (cd "$_ob_d" && pwd); return 0; fi
  done
  if command -v apt-get >/dev/null; then
    mkdir -p "$1/openblas" && (cd "$1/openblas" && apt-get download -qq libopenblas0-pthread >/dev/null 2>&1 &&
      dpkg -x libopenblas0-pthread_*.deb .) || true
    if [ -e "$1/openblas/$_ob_sub/libblas.so.3" ]; then (cd "$1/openblas/$_ob_sub" && pwd); fi
  fi
  return 0
}

# pick_coretype PY PROBE M: the OPENBLAS_CORETYPE (among those this CPU supports) under which
# PROBE (bench/gemm_probe.py) measures the fastest fp32 torch.mm with M rows; prints it, and each
# candidate's GFLOP/s on stderr.
pick_coretype() {
  _pc_cands=HASWELL
  grep -q avx512f /proc/cpuinfo && _pc_cands="SKYLAKEX $_pc_cands"
  grep -q avx512_bf16 /proc/cpuinfo && _pc_cands="COOPERLAKE $_pc_cands"
  grep -q amx_bf16 /proc/cpuinfo && _pc_cands="SAPPHIRERAPIDS $_pc_cands"
  _pc_best=0; _pc_pick=HASWELL
  for _pc_c in $_pc_cands; do
    _pc_g=$(OPENBLAS_CORETYPE=$_pc_c "$1" "$2" "$3" 2>/dev/null || echo 0)
    echo "torch.mm fp32 [$3x576]x[576x3072] with OPENBLAS_CORETYPE=$_pc_c: $_pc_g GFLOP/s" >&2
    if awk -v a="$_pc_g" -v b="$_pc_best" 'BEGIN { exit !(a > b) }'; then _pc_best=$_pc_g; _pc_pick=$_pc_c; fi
  done
  echo "$_pc_pick"
}
