#!/usr/bin/env bash
# Python references for the tests: a venv from Debian's python3 (which has python3-torch) with
# tokenizers, safetensors and gguf from PyPI. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
if ! .venv/bin/python -c 'import torch, tokenizers, safetensors, gguf, gguf.quants, jinja2, numpy' 2>/dev/null; then
  .venv/bin/python -m pip install -q --disable-pip-version-check \
    'tokenizers==0.20.3' 'safetensors==0.4.5' 'gguf==0.17.1' 'sentencepiece==0.2.0' 'jinja2>=3'
fi
.venv/bin/python -c 'import torch, tokenizers, safetensors, gguf; print("venv ok: torch", torch.__version__, "tokenizers", tokenizers.__version__)'
