#!/usr/bin/env bash
# README's first command: install dependencies, fetch the default model and data, build, and run
# the main job: the `quick` fine-tuning safety study (Kim et al. 2025) on SmolLM2-135M-Instruct,
# Alpaca and AdvBench. It ends by printing the paper-form table and where the report and plots
# are. Rerunning resumes: finished runs are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/fetch_model.sh
python3 scripts/fetch_data.py
bash scripts/build.sh release
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
time build/safetune study --preset quick --out runs/quick
