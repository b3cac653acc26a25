#!/usr/bin/env bash
# The long loaded-server run (docs/eval.md, "Serve under load"): `safetune serve --model` (SmolLM2-135M
# Q4_1) on loopback under tests/parity/serve/check_serve_load.py for SECONDS (default 600) with
# CLIENTS concurrent clients (default 32): completions, bad requests, bad HTTP, slow clients,
# disconnects mid-answer. Prints requests served, errors by kind, peak RSS and crashes; the counts
# also go to build/bench/serve_load.json. The 60 s version is the ctest e2e.serve.load.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${SECONDS_LOAD:-${1:-600}}
clients=${CLIENTS:-32}
mkdir -p build/bench
py=.venv/bin/python; [ -x "$py" ] || py=python3
exec "$py" tests/parity/serve/check_serve_load.py build/safetune models/SmolLM2-135M-Instruct.Q4_1.gguf \
  --seconds "$secs" --clients "$clients" --seed "${SEED:-16}" --json build/bench/serve_load.json --fixed-clients
