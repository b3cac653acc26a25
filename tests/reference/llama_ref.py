"""llama_ref.py - independent PyTorch reference for Llama / Qwen2 decoder models.

Written from the Hugging Face conventions (transformers modeling_llama.py / modeling_qwen2.py):
RMSNorm, rotate_half RoPE (with "linear" and "llama3" rope_scaling of inv_freq), grouped-query
attention, SwiGLU MLP, optional q/k/v biases (Qwen2), tied or untied lm_head.

Loading:
  * GGUF via gguf-py (GGUFReader + gguf.quants.dequantize); Q/K rows of llama GGUFs are
    un-permuted (inverse of llama.cpp convert_hf_to_gguf.py LlamaModel.permute).
  * Hugging Face folder (config.json + model.safetensors / model.safetensors.index.json).

API (all tensors on CPU):
  m = LlamaRef.from_gguf(path, dtype=torch.float32) / LlamaRef.from_hf(dir) / LlamaRef(cfg, w)
  m.forward(tokens)                       -> logits [B, T, V]
  m.loss(tokens, targets, mask, normaliser) -> scalar (sum of masked token CE / normaliser)
  m.generate(prompt_ids, max_new_tokens, stop_ids=()) -> list of new ids (greedy, no cache)
  m.params (dict HF name -> tensor); m.enable_grad() makes them leaves that require grad.
  write_tiny_random(dir, seed=0, **config) -> (config dict, weights dict): tiny HF checkpoint.
  m.set_lora(adapters, scale, dropout=None): LoRA on the projections (PEFT lora.Linear.forward:
    y = W x + b + scale * B(A dropout(x))); adapters maps PEFT names
    (base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight [r, in], lora_B [out, r]) to
    tensors; dropout(l, module, x) -> dropped x, or None. m.enable_lora_grad() makes the
    adapters leaves that require grad. lora_dropout_mask(...) reproduces safetune's seeded masks.
"""
import json
import math
import os

import numpy as np
import torch

torch.set_num_threads(os.cpu_count() or 1)

# --------------------------------------------------------------------------------------------
# configuration

_DEFAULTS = dict(
    model_type="llama", hidden_size=64, intermediate_size=96, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, vocab_size=128, max_position_embeddings=256,
    rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False, attention_bias=False,
    rope_scaling=None, bos_token_id=1, eos_token_id=2,
)


def normalise_config(cfg):
    """Fill defaults the way transformers does (head_dim, num_key_value_heads, qwen2 bias)."""
    c = dict(cfg)
    mt = c.get("model_type", "llama")
    if "num_key_value_heads" not in c or c["num_key_value_heads"] is None:
        c["num_key_value_heads"] = c["num_attention_heads"]
    if c.get("head_dim") is None:
        c["head_dim"] = c["hidden_size"] // c["num_attention_heads"]
    if mt == "qwen2":
        c["attention_bias"] = True  # Qwen2 always has q/k/v biases (no o_proj bias)
    c.setdefault("attention_bias", False)
    c.setdefault("tie_word_embeddings", False)
    c.setdefault("rms_norm_eps", 1e-6)
    c.setdefault("rope_theta", 10000.0)
    c.setdefault("rope_scaling", None)
    return c


def rope_inv_freq(cfg):
    """inv_freq [D/2] in float64, with rope_scaling applied (transformers modeling_rope_utils)."""
    D = cfg["head_dim"]
    inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
    rs = cfg.get("rope_scaling")
    if not rs:
        return inv
    kind = rs.get("rope_type", rs.get("type"))
    if kind in (None, "default"):
        return inv
    if kind == "linear":
        return inv / rs["factor"]
    if kind == "llama3":
        factor = rs["factor"]
        lo, hi = rs["low_freq_factor"], rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        lo_wl, hi_wl = old / lo, old / hi
        wl = 2 * math.pi / inv
        out = torch.where(wl > lo_wl, inv / factor, inv)
        smooth = (old / wl - lo) / (hi - lo)
        smoothed = (1 - smooth) * out / factor + smooth * out
        medium = ~(wl < hi_wl) & ~(wl > lo_wl)
        return torch.where(medium, smoothed, out)
    raise ValueError(f"unsupported rope_scaling {rs}")


# --------------------------------------------------------------------------------------------
# model


def param_shapes(cfg):
    """Ordered dict of HF tensor name -> shape for cfg."""
    C, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    H, KV, D = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    s = {"model.embed_tokens.weight": (V, C)}
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        s[p + "input_layernorm.weight"] = (C,)
        s[p + "self_attn.q_proj.weight"] = (H * D, C)
        s[p + "self_attn.k_proj.weight"] = (KV * D, C)
        s[p + "self_attn.v_proj.weight"] = (KV * D, C)
        if cfg["attention_bias"]:
            s[p + "self_attn.q_proj.bias"] = (H * D,)
            s[p + "self_attn.k_proj.bias"] = (KV * D,)
            s[p + "self_attn.v_proj.bias"] = (KV * D,)
        s[p + "self_attn.o_proj.weight"] = (C, H * D)
        s[p + "post_attention_layernorm.weight"] = (C,)
        s[p + "mlp.gate_proj.weight"] = (I, C)
        s[p + "mlp.up_proj.weight"] = (I, C)
        s[p + "mlp.down_proj.weight"] = (C, I)
    s["model.norm.weight"] = (C,)
    if not cfg["tie_word_embeddings"]:
        s["lm_head.weight"] = (V, C)
    return s


def _rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class LlamaRef:
    def __init__(self, cfg, weights, dtype=torch.float32):
        self.cfg = normalise_config(cfg)
        self.dtype = dtype
        shapes = param_shapes(self.cfg)
        self.params = {}
        for name, shape in shapes.items():
            if name not in weights:
                raise KeyError(f"missing tensor {name}")
            t = torch.as_tensor(np.asarray(weights[name])).to(dtype)
            if tuple(t.shape) != tuple(shape):
                raise ValueError(f"{name}: expected shape {shape}, found {tuple(t.shape)}")
            self.params[name] = t.contiguous()
        self.lora, self.lora_scale, self.lora_dropout = {}, 0.0, None

    def set_lora(self, adapters, scale, dropout=None):
        self.lora = {k: torch.tensor(np.asarray(v)).to(self.dtype).contiguous()
                     for k, v in adapters.items()}
        self.lora_scale, self.lora_dropout = scale, dropout

    def enable_lora_grad(self):
        for k in self.lora:
            self.lora[k] = self.lora[k].detach().requires_grad_(True)
        return self.lora

    def _linear(self, x, l, parent, name, bias=False):
        """x @ W.T (+ b) (+ the LoRA term of this module when an adapter is set)."""
        pre = f"model.layers.{l}.{parent}.{name}."
        y = x @ self.params[pre + "weight"].T
        if bias:
            y = y + self.params[pre + "bias"]
        a = self.lora.get(f"base_model.model.{pre}lora_A.weight")
        if a is not None:
            xd = x if self.lora_dropout is None else self.lora_dropout(l, name, x)
            y = y + self.lora_scale * ((xd @ a.T) @ self.lora[f"base_model.model.{pre}lora_B.weight"].T)
        return y

    def enable_grad(self):
        for k in self.params:
            self.params[k] = self.params[k].detach().requires_grad_(True)
        return self.params

    # ---- loading ----------------------------------------------------------------------------
    @classmethod
    def from_hf(cls, folder, dtype=torch.float32):
        with open(os.path.join(folder, "config.json")) as f:
            cfg = json.load(f)
        idx = os.path.join(folder, "model.safetensors.index.json")
        w = {}
        if os.path.exists(idx):
            with open(idx) as f:
                files = sorted(set(json.load(f)["weight_map"].values()))
        else:
            files = ["model.safetensors"]
        from safetensors.torch import load_file as tload
        for fn in files:
            for k, v in tload(os.path.join(folder, fn)).items():
                w[k] = v.float()  # F32 / F16 / BF16 -> fp32 exactly
        cfg = normalise_config(cfg)
        if not cfg["tie_word_embeddings"] and "lm_head.weight" not in w:
            raise KeyError("missing tensor lm_head.weight")
        return cls(cfg, w, dtype)

    @classmethod
    def from_gguf(cls, path, dtype=torch.float32):
        import gguf
        r = gguf.GGUFReader(path)

        def val(key, default=None):
            f = r.fields.get(key)
            return default if f is None else f.contents()

        arch = val("general.architecture")
        if arch not in ("llama", "qwen2"):
            raise ValueError(f"{path}: unsupported architecture {arch}")
        C = int(val(f"{arch}.embedding_length"))
        H = int(val(f"{arch}.attention.head_count"))
        KV = int(val(f"{arch}.attention.head_count_kv", H))
        tensors = {t.name: t for t in r.tensors}
        n_vocab = len(r.fields["tokenizer.ggml.tokens"].data) if "tokenizer.ggml.tokens" in r.fields \
            else int(tensors["token_embd.weight"].shape[1])
        cfg = dict(
            model_type=arch, hidden_size=C,
            intermediate_size=int(val(f"{arch}.feed_forward_length")),
            num_hidden_layers=int(val(f"{arch}.block_count")),
            num_attention_heads=H, num_key_value_heads=KV,
            head_dim=int(val(f"{arch}.attention.key_length", C // H)),
            vocab_size=n_vocab,
            max_position_embeddings=int(val(f"{arch}.context_length", 2048)),
            rope_theta=float(val(f"{arch}.rope.freq_base", 10000.0)),
            rms_norm_eps=float(val(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)),
            tie_word_embeddings="output.weight" not in tensors,
            attention_bias=arch == "qwen2",
        )
        st = val(f"{arch}.rope.scaling.type")
        if st == "linear":
            cfg["rope_scaling"] = {"rope_type": "linear",
                                   "factor": float(val(f"{arch}.rope.scaling.factor"))}
        if "rope_freqs.weight" in tensors:
            raise ValueError(f"{path}: rope_freqs.weight (llama3 GGUF) not supported by reference")
        cfg = normalise_config(cfg)
        names = {"token_embd.weight": "model.embed_tokens.weight",
                 "output_norm.weight": "model.norm.weight", "output.weight": "lm_head.weight"}
        per_layer = {"attn_norm.weight": "input_layernorm.weight",
                     "attn_q.weight": "self_attn.q_proj.weight",
                     "attn_k.weight": "self_attn.k_proj.weight",
                     "attn_v.weight": "self_attn.v_proj.weight",
                     "attn_q.bias": "self_attn.q_proj.bias",
                     "attn_k.bias": "self_attn.k_proj.bias",
                     "attn_v.bias": "self_attn.v_proj.bias",
                     "attn_output.weight": "self_attn.o_proj.weight",
                     "ffn_norm.weight": "post_attention_layernorm.weight",
                     "ffn_gate.weight": "mlp.gate_proj.weight",
                     "ffn_up.weight": "mlp.up_proj.weight",
                     "ffn_down.weight": "mlp.down_proj.weight"}
        for l in range(cfg["num_hidden_layers"]):
            for g, h in per_layer.items():
                names[f"blk.{l}.{g}"] = f"model.layers.{l}.{h}"
        w = {}
        for gname, t in tensors.items():
            if gname not in names:
                continue
            a = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
            shape = tuple(int(x) for x in reversed(t.shape))  # ggml ne[] is reversed
            a = torch.from_numpy(np.ascontiguousarray(a).reshape(shape))
            hname = names[gname]
            if arch == "llama" and (gname.endswith("attn_q.weight") or
                                    gname.endswith("attn_k.weight")):
                n_head = H if "attn_q" in gname else KV
                a = unpermute(a, n_head)
            w[hname] = a
        return cls(cfg, w, dtype)

    # ---- forward ----------------------------------------------------------------------------
    def _rms(self, x, w):
        var = x.pow(2).mean(-1, keepdim=True)
        return x * torch.rsqrt(var + self.cfg["rms_norm_eps"]) * w

    def hidden(self, tokens):
        """Final normed hidden states [B, T, C]."""
        c, p = self.cfg, self.params
        tokens = torch.as_tensor(tokens, dtype=torch.long)
        if tokens.dim() == 1:
            tokens = tokens[None]
        B, T = tokens.shape
        H, KV, D = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        inv = rope_inv_freq(c)
        ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
        ang = torch.cat((ang, ang), dim=-1)
        cos, sin = ang.cos().to(self.dtype), ang.sin().to(self.dtype)
        mask = torch.full((T, T), float("-inf"), dtype=self.dtype).triu(1)
        x = p["model.embed_tokens.weight"][tokens]
        for l in range(c["num_hidden_layers"]):
            pre = f"model.layers.{l}."
            h = self._rms(x, p[pre + "input_layernorm.weight"])

            def proj(n):
                return self._linear(h, l, "self_attn", f"{n}_proj", c["attention_bias"])
            q = proj("q").view(B, T, H, D).transpose(1, 2)
            k = proj("k").view(B, T, KV, D).transpose(1, 2)
            v = proj("v").view(B, T, KV, D).transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            rep = H // KV
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
            att = (q @ k.transpose(-1, -2)) / math.sqrt(D) + mask
            att = torch.softmax(att, dim=-1)
            o = (att @ v).transpose(1, 2).reshape(B, T, H * D)
            x = x + self._linear(o, l, "self_attn", "o_proj")
            h = self._rms(x, p[pre + "post_attention_layernorm.weight"])
            g = self._linear(h, l, "mlp", "gate_proj")
            u = self._linear(h, l, "mlp", "up_proj")
            x = x + self._linear(torch.nn.functional.silu(g) * u, l, "mlp", "down_proj")
        return self._rms(x, p["model.norm.weight"])

    def lm_head(self):
        p = self.params
        return p["model.embed_tokens.weight"] if self.cfg["tie_word_embeddings"] \
            else p["lm_head.weight"]

    def forward(self, tokens):
        """logits [B, T, V]."""
        return self.hidden(tokens) @ self.lm_head().T

    def loss(self, tokens, targets, mask, normaliser):
        """sum over (b,t) of mask * CE(logits[b,t], targets[b,t]) / normaliser.
        Targets < 0 (e.g. -100, torch's ignore_index) are ignored whatever the mask says."""
        logits = self.forward(tokens)
        targets = torch.as_tensor(targets, dtype=torch.long).reshape(logits.shape[:2])
        mask = torch.as_tensor(mask).to(logits.dtype).reshape(logits.shape[:2])
        mask = mask * (targets >= 0).to(mask.dtype)
        tgt = targets.clamp(min=0)
        lp = torch.log_softmax(logits, dim=-1).gather(-1, tgt[..., None])[..., 0]
        return -(lp * mask).sum() / normaliser

    @torch.no_grad()
    def generate(self, prompt_ids, max_new_tokens, stop_ids=()):
        """Greedy decoding without a cache (recomputes the prefix each step)."""
        ids = list(prompt_ids)
        out = []
        for _ in range(max_new_tokens):
            nxt = int(self.forward([ids])[0, -1].argmax())
            out.append(nxt)
            ids.append(nxt)
            if nxt in stop_ids:
                break
        return out


LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_M64 = (1 << 64) - 1


def _mix64(z):
    """splitmix64 finaliser on uint64 numpy arrays (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def lora_dropout_mask(seed, layer, module, n_rows, width, p):
    """Keep mask [n_rows, width] (bool) of safetune's seeded LoRA dropout for one module: row key
    mix(mix(seed ^ mix(layer << 8 | target)) + n), element kept when the high 32 bits of
    mix(key + i) are below floor((1 - p) * 2^32). Written from the description in lora.h."""
    t = LORA_TARGETS.index(module)
    with np.errstate(over="ignore"):
        k = _mix64(np.array([(layer << 8) | t], np.uint64))
        k = _mix64(np.array([seed], np.uint64) ^ k)
        rows = _mix64(k + np.arange(n_rows, dtype=np.uint64))
        h = _mix64(rows[:, None] + np.arange(width, dtype=np.uint64)[None, :]) >> np.uint64(32)
    thresh = min(int((1.0 - p) * 4294967296.0), 0xFFFFFFFF)
    return h < np.uint64(thresh)


def unpermute(w, n_head):
    """Inverse of llama.cpp LlamaModel.permute: interleaved-pair rows -> rotate_half rows."""
    rows = w.shape[0]
    return (w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:])
             .transpose(1, 2).reshape(w.shape).contiguous())


def permute(w, n_head):
    """llama.cpp LlamaModel.permute (HF rotate_half rows -> GGUF interleaved rows)."""
    rows = w.shape[0]
    return (w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:])
             .transpose(1, 2).reshape(w.shape).contiguous())


# --------------------------------------------------------------------------------------------
# tiny random checkpoints


def write_tiny_random(folder, seed=0, dtype="F32", **config):
    """Write config.json + model.safetensors for a tiny random model. `config` overrides the
    defaults (HF names; model_type "llama" or "qwen2"). Weights are scaled so activations are
    O(1) (std 1/sqrt(fan_in)), norms ~1 + noise, biases ~0.1. Returns (cfg, weights)."""
    from safetensors.torch import save_file
    cfg = dict(_DEFAULTS)
    cfg.update(config)
    if cfg["model_type"] == "qwen2":
        cfg["attention_bias"] = True
    cfg = normalise_config(cfg)
    cfg["architectures"] = ["Qwen2ForCausalLM" if cfg["model_type"] == "qwen2"
                            else "LlamaForCausalLM"]
    cfg["torch_dtype"] = "float32" if dtype == "F32" else "bfloat16"
    g = torch.Generator().manual_seed(seed)
    w = {}
    for name, shape in param_shapes(cfg).items():
        if name.endswith("norm.weight"):
            t = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif name.endswith(".bias"):
            t = 0.1 * torch.randn(shape, generator=g)
        elif name == "model.embed_tokens.weight":
            t = torch.randn(shape, generator=g)
        else:
            t = torch.randn(shape, generator=g) / math.sqrt(shape[1])
        w[name] = t.float().contiguous()
    os.makedirs(folder, exist_ok=True)
    out = {k: (v if dtype == "F32" else v.to(torch.bfloat16)) for k, v in w.items()}
    save_file(out, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    hf_cfg = {k: v for k, v in cfg.items() if v is not None or k == "rope_scaling"}
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(hf_cfg, f, indent=1)
    if dtype != "F32":
        w = {k: v.to(torch.bfloat16).float() for k, v in out.items()}
    return cfg, w


def load(path, dtype=torch.float32):
    """GGUF file or HF folder."""
    if os.path.isdir(path):
        return LlamaRef.from_hf(path, dtype)
    return LlamaRef.from_gguf(path, dtype)


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description="greedy-generate / print logits with the reference")
    ap.add_argument("model")
    ap.add_argument("tokens", nargs="+", type=int)
    ap.add_argument("--new", type=int, default=8)
    a = ap.parse_args()
    m = load(a.model)
    print("logits[-1][:8]", m.forward([a.tokens])[0, -1, :8].tolist())
    print("greedy", m.generate(a.tokens, a.new))
