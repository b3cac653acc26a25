#!/bin/sh
# run_python.sh PYTHON SCRIPT ARGS... : exit 77 (skip) when the venv python or torch is absent.
py="$1"; shift
if [ ! -x "$py" ] || ! "$py" -c "import torch, numpy" >/dev/null 2>&1; then
  echo "SKIP: $py with torch+numpy not found (scripts/setup_venv.sh)"; exit 77
fi
exec "$py" "$@"
