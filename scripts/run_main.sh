#!/usr/bin/env bash
# README's first command: install dependencies, fetch the default model and data, build, and run
# the main job on them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/fetch_model.sh
python3 scripts/fetch_data.py
bash scripts/build.sh release
build/safetune info models/SmolLM2-135M-Instruct.Q4_1.gguf
