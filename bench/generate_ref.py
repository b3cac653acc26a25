"""generate_ref.py - PyTorch reference throughput for batched greedy generation.

A KV-cached, batched greedy decoding loop written on top of tests/reference/llama_ref.py (its
weights, config, rope_inv_freq, _rotate_half and RMSNorm): prompts are left-padded to one length,
each row gets its own positions (0 at its first real token) and an attention mask that hides its
padding, the prompt is prefilled in one forward, then every row decodes one token per step until
all rows have hit a stop id or max_new_tokens (static batching, as transformers' generate).

Usage: generate_ref.py MODEL PROMPT_IDS.json --max-new-tokens N --stop 2 [--bf16] [--out F.json]
PROMPT_IDS.json: a list of lists of token ids. Prints one JSON line with tokens/s.
"""
import argparse
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
import llama_ref  # noqa: E402

torch.set_num_threads(os.cpu_count() or 1)


@torch.inference_mode()
def cached_greedy(m, prompts, max_new, stop_ids):
    c, p = m.cfg, m.params
    H, KV, D, L = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"], c["num_hidden_layers"]
    B, P = len(prompts), max(len(x) for x in prompts)
    S = P + max_new
    dt = m.dtype
    tok = torch.zeros(B, P, dtype=torch.long)
    pad = torch.zeros(B, dtype=torch.long)
    for b, x in enumerate(prompts):
        pad[b] = P - len(x)
        tok[b, P - len(x):] = torch.tensor(x)
    key_ok = torch.arange(S)[None, :] >= pad[:, None]          # [B, S] real (non-pad) keys
    inv = llama_ref.rope_inv_freq(c)
    kc = [torch.zeros(B, KV, S, D, dtype=dt) for _ in range(L)]
    vc = [torch.zeros(B, KV, S, D, dtype=dt) for _ in range(L)]
    lm = m.lm_head()

    def step(x_tok, start):
        T = x_tok.shape[1]
        pos = (torch.arange(start, start + T)[None, :] - pad[:, None]).clamp(min=0)  # [B, T]
        ang = pos.double()[..., None] * inv[None, None, :]
        ang = torch.cat((ang, ang), -1)
        cos, sin = ang.cos().to(dt)[:, None], ang.sin().to(dt)[:, None]           # [B,1,T,D]
        q_idx = torch.arange(start, start + T)
        k_idx = torch.arange(start + T)
        allowed = (k_idx[None, :] <= q_idx[:, None])[None] & key_ok[:, None, :start + T]
        allowed = allowed | (k_idx[None, None, :] == q_idx[None, :, None])     # pad rows see themselves
        bias = torch.zeros(B, 1, T, start + T, dtype=dt).masked_fill(~allowed[:, None], float("-inf"))
        x = p["model.embed_tokens.weight"][x_tok]
        for l in range(L):
            pre = f"model.layers.{l}."
            h = m._rms(x, p[pre + "input_layernorm.weight"])

            def proj(n):
                y = h @ p[pre + f"self_attn.{n}_proj.weight"].T
                if c["attention_bias"]:
                    y = y + p[pre + f"self_attn.{n}_proj.bias"]
                return y
            q = proj("q").view(B, T, H, D).transpose(1, 2)
            k = proj("k").view(B, T, KV, D).transpose(1, 2)
            v = proj("v").view(B, T, KV, D).transpose(1, 2)
            q = q * cos + llama_ref._rotate_half(q) * sin
            k = k * cos + llama_ref._rotate_half(k) * sin
            kc[l][:, :, start:start + T] = k.to(dt)
            vc[l][:, :, start:start + T] = v.to(dt)
            # grouped-query attention without materialising repeated K/V: head h uses kv head
            # h // rep, so q [B, H, T, D] viewed as [B, KV, rep*T, D] lines up with K/V [B, KV, S, D]
            rep = H // KV
            kk, vv = kc[l][:, :, :start + T], vc[l][:, :, :start + T]
            att = (q.reshape(B, KV, rep * T, D) @ kk.transpose(-1, -2).to(q.dtype)) / math.sqrt(D)
            att = att.view(B, KV, rep, T, start + T) + bias[:, :, None]
            att = torch.softmax(att, dim=-1).view(B, KV, rep * T, start + T)
            o = (att.to(vv.dtype) @ vv).view(B, H, T, D).transpose(1, 2).reshape(B, T, H * D)
            x = x + o @ p[pre + "self_attn.o_proj.weight"].T
            h = m._rms(x, p[pre + "post_attention_layernorm.weight"])
            g = h @ p[pre + "mlp.gate_proj.weight"].T
            u = h @ p[pre + "mlp.up_proj.weight"].T
            x = x + (torch.nn.functional.silu(g) * u) @ p[pre + "mlp.down_proj.weight"].T
        x = m._rms(x[:, -1], p["model.norm.weight"])
        return (x @ lm.T).float()                                                  # [B, V]

    out = [[] for _ in range(B)]
    done = torch.zeros(B, dtype=torch.bool)
    logits = step(tok, 0)
    for t in range(max_new):
        nxt = logits.argmax(-1)
        for b in range(B):
            if not done[b]:
                out[b].append(int(nxt[b]))
                if int(nxt[b]) in stop_ids or len(out[b]) >= max_new:
                    done[b] = True
        if bool(done.all()):
            break
        logits = step(nxt[:, None], P + t)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("prompts")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--stop", type=int, action="append", default=[])
    ap.add_argument("--bf16", action="store_true", help="torch.autocast('cpu', dtype=torch.bfloat16)")
    ap.add_argument("--out", help="write the generated ids (JSON list of lists)")
    a = ap.parse_args()
    with open(a.prompts) as f:
        prompts = json.load(f)
    m = llama_ref.load(a.model)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if a.bf16 else torch.autocast("cpu", enabled=False)
    with ctx:
        cached_greedy(m, [prompts[0][:8]], 2, set(a.stop))  # warm-up
        t0 = time.time()
        out = cached_greedy(m, prompts, a.max_new_tokens, set(a.stop))
        dt = time.time() - t0
    n = sum(len(x) for x in out)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f)
    print(json.dumps({"config": "torch bf16 autocast" if a.bf16 else "torch fp32", "threads": torch.get_num_threads(),
                      "prompts": len(prompts), "tokens": n, "seconds": round(dt, 3), "tok_per_s": round(n / dt, 2)}))


if __name__ == "__main__":
    main()
