#!/usr/bin/env python3
"""PyTorch reference for bench_train: optimiser steps (forward, loss, backward, clip, AdamW) of
tests/reference/llama_ref.py on the same checkpoint, fp32 and bf16 autocast, all cores.
Usage: train_ref.py MODEL [B] [T] [steps] [DUMP_DIR]
With DUMP_DIR (written by bench_train), trains on exactly bench_train's batches, in both of its
configurations: {random,alpaca}_ids.i32 / _mask.u8, [B, T+1]. Without it, random tokens only.
The loss is what transformers' LlamaForCausalLM computes: logits [B, T, V] for every position,
upcast to fp32, cross_entropy(ignore_index=-100) averaged over the trained positions, labels
ids[t+1] where token t+1 is an assistant token and t < T-1 (bench_train's collation)."""
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
import llama_ref  # noqa: E402

torch.set_num_threads(os.cpu_count() or 1)
model = sys.argv[1]
B = int(sys.argv[2]) if len(sys.argv) > 2 else 8
T = int(sys.argv[3]) if len(sys.argv) > 3 else 512
steps = int(sys.argv[4]) if len(sys.argv) > 4 else 2
dump = sys.argv[5] if len(sys.argv) > 5 else None
m = llama_ref.load(model)
params = m.enable_grad()
V = m.cfg["vocab_size"]


def batch(name):
    """(inputs [B, T], labels [B, T]) from bench_train's dump, or random tokens."""
    if dump:
        ids = np.fromfile(os.path.join(dump, f"{name}_ids.i32"), dtype="<i4").reshape(B, T + 1)
        mask = np.fromfile(os.path.join(dump, f"{name}_mask.u8"), dtype=np.uint8).reshape(B, T + 1)
        ids, mask = torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(mask.astype(bool))
    else:
        ids = torch.randint(0, V, (B, T + 1), generator=torch.Generator().manual_seed(1))
        mask = torch.ones(B, T + 1, dtype=torch.bool)
    inp = ids[:, :T]
    labels = torch.where(mask[:, 1:T + 1], ids[:, 1:T + 1], torch.full_like(inp, -100))
    labels[:, T - 1] = -100  # the collator truncates rows to T tokens: no target at T-1
    return inp, labels


def loss_fn(inp, labels):
    logits = m.forward(inp).float()
    return F.cross_entropy(logits.reshape(-1, V), labels.reshape(-1), ignore_index=-100)


opt = torch.optim.AdamW(list(params.values()), lr=1e-6)
print(f"train_ref: torch {torch.__version__}, {torch.get_num_threads()} threads, "
      f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
for cname in (("random", "alpaca") if dump else ("random",)):
    inp, labels = batch(cname)
    print(f"config {cname}: {int((labels >= 0).sum())} of {B * T} positions trained", flush=True)
    for name, ctx in (("fp32", None), ("bf16-autocast", torch.bfloat16)):
        t0, n = 0.0, 0
        for s in range(steps):
            if s == 1:
                t0 = time.time()
            ts = time.time()
            opt.zero_grad(set_to_none=True)
            if ctx is None:
                loss = loss_fn(inp, labels)
            else:
                with torch.autocast("cpu", dtype=ctx):
                    loss = loss_fn(inp, labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
            opt.step()
            if s >= 1:
                n += B * T
            print(f"  {name} {cname} step {s + 1}: {time.time() - ts:.2f} s, loss {float(loss):.4f}",
                  flush=True)
            del loss
        print(f"pytorch {name} {cname}: {n / (time.time() - t0) if steps > 1 else 0:.1f} tokens/s",
              flush=True)
