#!/usr/bin/env python3
"""PyTorch reference for bench_lora: LoRA optimiser steps (forward with adapters, loss,
backward into the adapters only, AdamW) on tests/reference/llama_ref.py with set_lora (PEFT's
lora.Linear.forward, frozen base), fp32 or bf16 autocast, all cores, random tokens.
Usage: lora_ref.py MODEL|llama-1b [B] [T] [steps] [r] [fp32|bf16] [base fp32|bf16]
base bf16: the frozen base's matrices stored as bf16 tensors (with bf16 autocast), as safetune's
--base-precision bf16.
llama-1b: random weights of the Llama-3.2-1B shape (as bench_lora). Prints tokens/s and the
process's peak RSS."""
import math
import os
import resource
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
import llama_ref  # noqa: E402

torch.set_num_threads(os.cpu_count() or 1)
model = sys.argv[1]
B = int(sys.argv[2]) if len(sys.argv) > 2 else 8
T = int(sys.argv[3]) if len(sys.argv) > 3 else 512
steps = int(sys.argv[4]) if len(sys.argv) > 4 else 2
r = int(sys.argv[5]) if len(sys.argv) > 5 else 16
prec = sys.argv[6] if len(sys.argv) > 6 else "fp32"
base_prec = sys.argv[7] if len(sys.argv) > 7 else "fp32"
if base_prec == "bf16":
    prec = "bf16"
if model == "llama-1b":
    cfg = llama_ref.normalise_config(dict(
        model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True,
        rope_theta=500000.0, rms_norm_eps=1e-5, max_position_embeddings=131072,
        rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}))
    g = torch.Generator().manual_seed(0)
    w = {n: (torch.ones(s) if len(s) == 1 else (torch.rand(s, generator=g) * 2 - 1) * 0.02 * math.sqrt(3))
         for n, s in llama_ref.param_shapes(cfg).items()}
    m = llama_ref.LlamaRef(cfg, w)
    del w
else:
    m = llama_ref.load(model)
if base_prec == "bf16":  # frozen matrices held in bf16 (norms fp32)
    for k in list(m.params):
        if m.params[k].dim() == 2:
            m.params[k] = m.params[k].to(torch.bfloat16)
c = m.cfg
C, I, L = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
HD, KD = c["num_attention_heads"] * c["head_dim"], c["num_key_value_heads"] * c["head_dim"]
dims = {"q_proj": ("self_attn", C, HD), "k_proj": ("self_attn", C, KD), "v_proj": ("self_attn", C, KD),
        "o_proj": ("self_attn", HD, C), "gate_proj": ("mlp", C, I), "up_proj": ("mlp", C, I),
        "down_proj": ("mlp", I, C)}
ad = {}
for l in range(L):
    for mod, (par, fin, fout) in dims.items():
        pre = f"base_model.model.model.layers.{l}.{par}.{mod}."
        ad[pre + "lora_A.weight"] = (torch.rand(r, fin) * 2 - 1) / math.sqrt(fin)
        ad[pre + "lora_B.weight"] = torch.zeros(fout, r)
drop = torch.nn.Dropout(0.05)
m.set_lora(ad, 2.0, lambda l, mod, x: drop(x))
lp = m.enable_lora_grad()
V = c["vocab_size"]
ids = torch.randint(0, V, (B, T + 1), generator=torch.Generator().manual_seed(1))
inp, labels = ids[:, :T], ids[:, 1:].clone()
labels[:, T - 1] = -100
opt = torch.optim.AdamW(list(lp.values()), lr=1e-4)
ema = {n: p.detach().clone() for n, p in lp.items()}
print(f"lora_ref: torch {torch.__version__}, {torch.get_num_threads()} threads, {model}, B {B} x T {T}, "
      f"r {r} on all seven projections, {prec}", flush=True)
t0, n = 0.0, 0
for s in range(steps):
    if s == 1:
        t0 = time.time()
    ts = time.time()
    opt.zero_grad(set_to_none=True)
    if prec == "bf16":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = m.forward(inp)
    else:
        logits = m.forward(inp)
    loss = F.cross_entropy(logits.float().reshape(-1, V), labels.reshape(-1), ignore_index=-100)
    del logits
    loss.backward()
    opt.step()
    with torch.no_grad():
        for k, p in lp.items():
            ema[k].mul_(0.99).add_(p.detach(), alpha=0.01)
    if s >= 1:
        n += B * T
    print(f"  step {s + 1}: {time.time() - ts:.2f} s, loss {float(loss):.4f}", flush=True)
    del loss
print(f"pytorch lora {prec}{' (bf16 base)' if base_prec == 'bf16' else ''}: {n / (time.time() - t0) if steps > 1 else 0:.1f} tokens/s")
print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
