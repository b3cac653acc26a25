#!/usr/bin/env python3
"""PyTorch reference for bench_train: one training step (forward, loss, backward, clip, AdamW)
of tests/reference/llama_ref.py on the same checkpoint, random tokens [B, T], fp32 and bf16
autocast, all cores. Usage: train_ref.py MODEL [B] [T] [steps]"""
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
import llama_ref  # noqa: E402

torch.set_num_threads(os.cpu_count() or 1)
model = sys.argv[1]
B = int(sys.argv[2]) if len(sys.argv) > 2 else 8
T = int(sys.argv[3]) if len(sys.argv) > 3 else 512
steps = int(sys.argv[4]) if len(sys.argv) > 4 else 3
m = llama_ref.load(model)
params = m.enable_grad()
V = m.cfg["vocab_size"]
g = torch.Generator().manual_seed(1)
tok = torch.randint(0, V, (B, T + 1), generator=g)
inp, tgt = tok[:, :-1], tok[:, 1:]
mask = torch.ones(B, T)
opt = torch.optim.AdamW(list(params.values()), lr=1e-6)
print(f"train_ref: torch {torch.__version__}, {torch.get_num_threads()} threads, "
      f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
for name, ctx in (("fp32", None), ("bf16-autocast", torch.bfloat16)):
    t0, n = 0.0, 0
    for s in range(steps):
        if s == 1:
            t0 = time.time()
        ts = time.time()
        opt.zero_grad()
        if ctx is None:
            loss = m.loss(inp, tgt, mask, float(B * T))
        else:
            with torch.autocast("cpu", dtype=ctx):
                loss = m.loss(inp, tgt, mask, float(B * T))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        opt.step()
        if s >= 1:
            n += B * T
        print(f"  {name} step {s + 1}: {time.time() - ts:.2f} s, loss {float(loss):.4f}", flush=True)
    print(f"pytorch {name}: {n / (time.time() - t0) if steps > 1 else 0:.1f} tokens/s", flush=True)
