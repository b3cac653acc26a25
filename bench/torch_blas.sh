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
