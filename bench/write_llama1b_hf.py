"""write_llama1b_hf.py OUT TOKENIZER_DIR - a random-weight Hugging Face folder of the
Llama-3.2-1B shape (hidden 2048, 16 layers, 32 heads, 8 KV heads, intermediate 8192, vocab 128256,
tied embeddings, llama3 RoPE scaling) in bf16, for measuring `safetune train` from the CLI.

Weights as bench_lora / lora_ref.py draw them: matrices U(-0.02·√3, 0.02·√3) (std 0.02), norms 1,
rounded to bf16 (round to nearest even). model.safetensors is written tensor by tensor (header
first, then each tensor's bytes), so at most one tensor is in memory (the embedding: 1 GiB of
float32 while it is drawn); the folder is about 2.5 GB. tokenizer.json and tokenizer_config.json
are copied from TOKENIZER_DIR (any HF folder, e.g. SmolLM2's: its ids lie below 128256), and
bos/eos ids taken from its config.json when it has one. Written into OUT.tmp, then renamed."""
import json
import os
import shutil
import struct
import sys

import numpy as np

C, I, L, H, KV, V = 2048, 8192, 16, 32, 8, 128256
D = C // H


def shapes():
    yield "model.embed_tokens.weight", (V, C)
    for l in range(L):
        p = f"model.layers.{l}."
        yield p + "input_layernorm.weight", (C,)
        yield p + "self_attn.q_proj.weight", (H * D, C)
        yield p + "self_attn.k_proj.weight", (KV * D, C)
        yield p + "self_attn.v_proj.weight", (KV * D, C)
        yield p + "self_attn.o_proj.weight", (C, H * D)
        yield p + "post_attention_layernorm.weight", (C,)
        yield p + "mlp.gate_proj.weight", (I, C)
        yield p + "mlp.up_proj.weight", (I, C)
        yield p + "mlp.down_proj.weight", (C, I)
    yield "model.norm.weight", (C,)


def bf16_bytes(x):
    u = x.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16).tobytes()


def main():
    out, tok = sys.argv[1], sys.argv[2]
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    hdr, off = {"__metadata__": {"format": "pt"}}, 0
    for name, shp in shapes():
        n = int(np.prod(shp)) * 2
        hdr[name] = {"dtype": "BF16", "shape": list(shp), "data_offsets": [off, off + n]}
        off += n
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    rng = np.random.default_rng(0)
    a = 0.02 * np.sqrt(3.0)
    with open(os.path.join(tmp, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for name, shp in shapes():
            if len(shp) == 1:
                f.write(bf16_bytes(np.ones(shp, np.float32)))
                continue
            for r0 in range(0, shp[0], 8192):  # 8192 rows at a time: <= 64 MiB of float32
                rows = min(8192, shp[0] - r0)
                f.write(bf16_bytes(rng.uniform(-a, a, (rows, shp[1])).astype(np.float32)))
    bos, eos = 1, 2
    tc = os.path.join(tok, "config.json")
    if os.path.exists(tc):
        t = json.load(open(tc))
        bos, eos = t.get("bos_token_id", bos), t.get("eos_token_id", eos)
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": C,
           "intermediate_size": I, "num_hidden_layers": L, "num_attention_heads": H,
           "num_key_value_heads": KV, "head_dim": D, "vocab_size": V, "tie_word_embeddings": True,
           "rope_theta": 500000.0, "rms_norm_eps": 1e-5, "max_position_embeddings": 131072,
           "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
           "hidden_act": "silu", "attention_bias": False, "torch_dtype": "bfloat16",
           "bos_token_id": bos, "eos_token_id": eos}
    json.dump(cfg, open(os.path.join(tmp, "config.json"), "w"), indent=1)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        if os.path.exists(os.path.join(tok, f)):
            shutil.copy(os.path.join(tok, f), tmp)
    shutil.rmtree(out, ignore_errors=True)
    os.rename(tmp, out)
    print(f"wrote {out}: {off / 2**30:.2f} GiB of bf16 weights")


main()
