"""check_lora.py CASE LORA_TOOL - LoRA adapters over a frozen base against the independent
PyTorch reference (tests/reference/llama_ref.py with set_lora: PEFT's lora.Linear.forward).

CASE: tiny     tiny random HF checkpoints (GQA + llama3 RoPE untied, Qwen2 q/k/v bias tied, MHA tied,
               MQA bf16 checkpoint): loss and every adapter gradient (all seven targets, B ≠ 0),
               a target subset with seeded dropout (masks rebuilt by llama_ref.lora_dropout_mask),
               PEFT's initialisation (B = 0, A ~ U(−1/√in, 1/√in)), no base gradient computed
      bf16     the ST_MATMUL_BF16 training path against the float64 reference (bf16 bound); a frozen
               base held in bf16 against the reference with its matrices rounded to bf16 (same
               bound), and bit for bit equal to the bf16 path on a bf16 checkpoint
      smollm   SmolLM2-135M-Instruct GGUF: every adapter gradient, r 8, all targets
      train    ten AdamW steps of LoRA (PEFT init) + EMA over a frozen base vs torch.optim.AdamW
               and a manual EMA in float32: losses, live and EMA adapters
      cli_bf16 `train --finetune lora --base-precision bf16` loading the file straight into the bf16
               base (GGUF Q4_1 and a bf16 HF folder) against the fp32-model-first path
               (SAFETUNE_LORA_BASE_VIA_FP32=1): losses, val_loss and adapters bit for bit, a peak
               RSS lower by at least half the fp32 matrices, resume bit-identical
Bounds: loss ≤ 1e-5 relative; every adapter gradient tensor ≤ 1e-4 relative (fp32); training:
losses ≤ 1e-5, adapters ≤ 1e-4 relative. Exit 77 when the SmolLM2 file is absent (smollm)."""
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "reference"))
import llama_ref as R  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import scratch  # noqa: E402

torch.set_num_threads(os.cpu_count() or 1)
CASE, TOOL = sys.argv[1], sys.argv[2]
TMP = os.environ.get("SAFETUNE_TEST_TMP") or tempfile.gettempdir()
failures = []


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def check(what, err, tol):
    ok = err <= tol
    print(f"{'ok  ' if ok else 'FAIL'} {what}: {err:.3g} (bound {tol:g})", flush=True)
    if not ok:
        failures.append(what)


def run(*args):
    r = subprocess.run([TOOL, *map(str, args)], capture_output=True, text=True)
    if r.returncode != 0:
        print("lora_tool failed:", r.stderr.strip(), file=sys.stderr)
        sys.exit(1)


def layout(d):
    out = []
    for line in open(os.path.join(d, "layout.tsv")):
        name, off, numel, r0, r1 = line.split("\t")
        out.append((name, int(off), int(numel), (int(r0), int(r1))))
    return out


def unflat(flat, lay):
    return {n: flat[o:o + k].reshape(shape) for n, o, k, shape in lay}


def write_batch(d, toks, tgts, mask):
    f = {k: os.path.join(d, k) for k in ("tok.i32", "tgt.i32", "mask.f32")}
    toks.astype(np.int32).tofile(f["tok.i32"])
    tgts.astype(np.int32).tofile(f["tgt.i32"])
    mask.astype(np.float32).tofile(f["mask.f32"])
    return f


def dropout_fn(seed, p, B, T, dtype):
    if p == 0 or seed == 0:
        return None

    def drop(l, module, x):
        m = R.lora_dropout_mask(seed, l, module, B * T, x.shape[-1], p)
        m = torch.from_numpy(m.reshape(x.shape)).to(dtype)
        return x * m * (1.0 / (1.0 - p))
    return drop


def grads(model_path, ref, toks, tgts, mask, norm, tag, d, r=4, alpha=8.0, p=0.0,
          targets="all", seed=7, drop_seed=0, b_std=0.05, prec="f32", tol=1e-4, head_rows=0):
    B, T = toks.shape
    f = write_batch(d, toks, tgts, mask)
    spec = f"{r}:{alpha}:{p}:{targets}:{seed}:{drop_seed}:{b_std}:{prec}"
    os.environ["LORA_HEAD_ROWS"] = str(head_rows)
    run("grads", model_path, spec, f["tok.i32"], f["tgt.i32"], f["mask.f32"], B, T, norm, d)
    os.environ["LORA_HEAD_ROWS"] = "0"
    lay = layout(d)
    ad = unflat(np.fromfile(os.path.join(d, "params.f32"), np.float32), lay)
    ref.set_lora(ad, alpha / r, dropout_fn(drop_seed, p, B, T, ref.dtype))
    lp = ref.enable_lora_grad()
    base = ref.params
    for v in base.values():
        v.requires_grad_(False)
    loss = ref.loss(torch.from_numpy(toks), torch.from_numpy(tgts), torch.from_numpy(mask), norm)
    loss.backward()
    ours_loss = float(open(os.path.join(d, "loss.txt")).read())
    check(f"{tag} loss ({ours_loss:.6f})", abs(ours_loss - loss.item()) / abs(loss.item()),
          1e-5 if prec == "f32" else tol)
    g = np.fromfile(os.path.join(d, "grads.f32"), np.float32)
    want_names = {n for n in lp}
    assert want_names == {n for n, _, _, _ in lay}, "layout names differ from the adapter's"
    worst = 0.0
    for name, off, numel, shape in lay:
        want = lp[name].grad.detach().numpy().reshape(-1)
        assert np.linalg.norm(want) > 0, f"{name}: zero reference gradient (test cannot fail)"
        e = rel(g[off:off + numel], want)
        if e > tol:
            check(f"{tag} grad {name}", e, tol)
        worst = max(worst, e)
    check(f"{tag} all {len(lay)} adapter gradient tensors (worst)", worst, tol)
    ref.set_lora({}, 0.0)
    return lay


TINY = [
    ("llama-gqa-untied-llama3", dict(model_type="llama", num_attention_heads=4, num_key_value_heads=2,
                                     tie_word_embeddings=False, rope_theta=500000.0,
                                     rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                                   "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                   "original_max_position_embeddings": 16})),
    ("qwen2-bias-gqa-tied", dict(model_type="qwen2", num_attention_heads=6, num_key_value_heads=2,
                                 hidden_size=48, tie_word_embeddings=True, rms_norm_eps=1e-6,
                                 rope_theta=1000000.0)),
    ("llama-mha-tied", dict(model_type="llama", num_attention_heads=4, num_key_value_heads=4,
                            tie_word_embeddings=True)),
    ("llama-mqa-bf16", dict(model_type="llama", num_attention_heads=4, num_key_value_heads=1,
                            num_hidden_layers=3)),
]


def tiny_model(i):
    tag, cfg = TINY[i]
    d = scratch.made(os.path.join(TMP, f"lora_parity_{CASE}_{tag}"))  # per case: ctest -j runs cases at once
    os.makedirs(d, exist_ok=True)
    R.write_tiny_random(d, seed=i, dtype="BF16" if "bf16" in tag else "F32", **cfg)
    return tag, d


def batch(rng, V, B, T):
    toks = rng.integers(0, V, (B, T))
    tgts = rng.integers(0, V, (B, T))
    tgts[0, 3] = -100
    mask = (rng.random((B, T)) < 0.7).astype(np.float32)
    return toks, tgts, mask, float(mask.sum() * 1.25)


def tiny():
    rng = np.random.default_rng(0)
    for i in range(len(TINY)):
        tag, d = tiny_model(i)
        ref = R.load(d, torch.float64)
        toks, tgts, mask, norm = batch(rng, ref.cfg["vocab_size"], 3, 70)
        grads(d, ref, toks, tgts, mask, norm, f"{tag} r4 all", d)
        if i == 0:
            grads(d, ref, toks, tgts, mask, norm, f"{tag} r3 q,v,down dropout 0.3", d, r=3,
                  alpha=5.0, p=0.3, targets="q_proj,v_proj,down_proj", drop_seed=1234)
            grads(d, ref, toks, tgts, mask, norm, f"{tag} r2 o,gate,up,k dropout 0.1", d, r=2,
                  alpha=2.0, p=0.1, targets="o_proj,gate_proj,up_proj,k_proj", drop_seed=99)
            # dropout seed 0 = the deterministic forward even with lora_dropout > 0
            grads(d, ref, toks, tgts, mask, norm, f"{tag} dropout 0.3, seed 0 (eval)", d, p=0.3)
            # the chunked lm_head + cross-entropy over 14 chunks of 11 trained rows (and a last
            # short one): d(ln_f) of each chunk taken in the forward
            grads(d, ref, toks, tgts, mask, norm, f"{tag} r4 all, head in chunks of 11 rows", d,
                  head_rows=11)
    # PEFT's initialisation: B = 0, A ~ kaiming_uniform(a=√5) = U(−1/√in, 1/√in)
    tag, d = tiny_model(0)
    f = write_batch(d, *batch(rng, 128, 1, 8)[:3])
    run("grads", d, "16:32:0:all:5:0:0:f32", f["tok.i32"], f["tgt.i32"], f["mask.f32"], 1, 8, 8.0, d)
    lay = layout(d)
    prm = unflat(np.fromfile(os.path.join(d, "params.f32"), np.float32), lay)
    g = unflat(np.fromfile(os.path.join(d, "grads.f32"), np.float32), lay)
    bmax = max(float(np.abs(v).max()) for n, v in prm.items() if ".lora_B." in n)
    check("init: every lora_B is zero (max |B|)", bmax, 0.0)
    worst_bound, worst_std = 0.0, 0.0
    for n, v in prm.items():
        if ".lora_A." in n:
            bound = 1.0 / math.sqrt(v.shape[1])
            worst_bound = max(worst_bound, float(np.abs(v).max()) / bound)
            worst_std = max(worst_std, abs(float(v.std()) / (bound / math.sqrt(3)) - 1))
    check("init: max |A| / (1/√in) (≤ 1)", worst_bound, 1.0)
    check("init: |std(A) / (1/√(3 in)) − 1|", worst_std, 0.15)
    ga = max(float(np.abs(v).max()) for n, v in g.items() if ".lora_A." in n)
    gb = max(float(np.abs(v).max()) for n, v in g.items() if ".lora_B." in n)
    check("init: dA is exactly 0 while B = 0", ga, 0.0)
    check("init: dB nonzero (1 / max |dB|)", 1.0 / max(gb, 1e-30), 1e6)


def bf16():
    rng = np.random.default_rng(3)
    tag, d = tiny_model(0)
    ref = R.load(d, torch.float64)
    toks, tgts, mask, norm = batch(rng, ref.cfg["vocab_size"], 2, 40)
    # bf16 operands (8 significant bits) in every base product: a bf16-sized bound
    grads(d, ref, toks, tgts, mask, norm, f"{tag} bf16 path, all targets", d, prec="bf16", tol=3e-2)
    grads(d, ref, toks, tgts, mask, norm, f"{tag} bf16 path, dropout 0.2", d, prec="bf16", tol=3e-2,
          p=0.2, drop_seed=5)
    # A frozen base held in bf16 (st_lora_base ST_BASE_BF16): against the float64 reference with
    # every base matrix rounded to bf16 (what the base holds; norms and biases stay fp32), so the
    # remaining error is the bf16 rounding of the activation operands (8 significant bits,
    # relative 2^-9 per operand, through 2 layers and the head): the bf16 path's bound above.
    ref16 = R.load(d, torch.float64)
    with torch.no_grad():
        for name, v in ref16.params.items():
            if v.dim() == 2:
                v.copy_(v.to(torch.bfloat16).to(torch.float64))
    for hr in (0, 7):
        grads(d, ref16, toks, tgts, mask, norm, f"{tag} bf16 base, head chunks {hr or 'all'}", d,
              prec="bf16base", tol=3e-2, head_rows=hr)
    grads(d, ref16, toks, tgts, mask, norm, f"{tag} bf16 base, dropout 0.2", d, prec="bf16base",
          tol=3e-2, p=0.2, drop_seed=5)
    # On a checkpoint whose weights are bf16 already, holding the base in bf16 changes nothing:
    # the bf16 path on the fp32 base (weights rounded per product, exactly) gives the same
    # loss and adapter gradients bit for bit
    tag3, d3 = tiny_model(3)
    ref3 = R.load(d3, torch.float64)
    toks, tgts, mask, norm = batch(rng, ref3.cfg["vocab_size"], 2, 40)
    f = write_batch(d3, toks, tgts, mask)
    out = {}
    for prec in ("bf16", "bf16base"):
        spec = f"4:8.0:0.1:all:7:11:0.05:{prec}"
        run("grads", d3, spec, f["tok.i32"], f["tgt.i32"], f["mask.f32"], 2, 40, norm, d3)
        out[prec] = (open(os.path.join(d3, "loss.txt")).read(),
                     np.fromfile(os.path.join(d3, "grads.f32"), np.float32))
    check(f"{tag3} bf16 base = bf16 path on bf16 weights: loss", 0.0 if out["bf16"][0] == out["bf16base"][0] else 1.0, 0.0)
    check(f"{tag3} bf16 base = bf16 path on bf16 weights: max |grad diff|",
          float(np.abs(out["bf16"][1] - out["bf16base"][1]).max()), 0.0)
    assert np.abs(out["bf16"][1]).max() > 0, "zero gradients (test cannot fail)"


def smollm():
    path = os.path.join(os.environ.get("SAFETUNE_MODEL_DIR", "models"), "SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.path.exists(path):
        print(f"skip: {path} absent")
        sys.exit(77)
    ref = R.load(path, torch.float64)
    V = ref.cfg["vocab_size"]
    rng = np.random.default_rng(1)
    d = scratch.made(os.path.join(TMP, "lora_parity_smollm"))
    os.makedirs(d, exist_ok=True)
    toks = rng.integers(0, V, (2, 8))
    tgts = np.concatenate([toks[:, 1:], rng.integers(0, V, (2, 1))], axis=1)
    mask = np.ones((2, 8), np.float32)
    mask[:, :3] = 0
    grads(path, ref, toks, tgts, mask, float(mask.sum()), "smollm2 r8 all", d, r=8, alpha=16.0,
          b_std=0.02)


def train():
    rng = np.random.default_rng(2)
    lr, wd, decay, steps, r, alpha = 3e-3, 0.1, 0.9, 10, 4, 8.0
    for i in (0, 1):
        tag, d = tiny_model(i)
        ref = R.load(d, torch.float32)
        toks, tgts, mask, norm = batch(rng, ref.cfg["vocab_size"], 2, 24)
        f = write_batch(d, toks, tgts, mask)
        run("train", d, f"{r}:{alpha}:0:all:11:0:0:f32", f["tok.i32"], f["tgt.i32"], f["mask.f32"],
            2, 24, norm, lr, wd, decay, steps, d)
        lay = layout(d)
        init = unflat(np.fromfile(os.path.join(d, "init.f32"), np.float32), lay)
        T0 = np.concatenate([init[n].astype(np.float64).reshape(-1) for n, _, _, _ in lay])
        ref.set_lora({n: v.copy() for n, v in init.items()}, alpha / r)
        lp = ref.enable_lora_grad()
        for v in ref.params.values():
            v.requires_grad_(False)
        opt = torch.optim.AdamW(list(lp.values()), lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd)
        ema = {n: p.detach().clone() for n, p in lp.items()}  # starts at θ0: B = 0
        ours = np.loadtxt(os.path.join(d, "losses.txt"))
        worst = 0.0
        for s in range(steps):
            opt.zero_grad()
            loss = ref.loss(torch.from_numpy(toks), torch.from_numpy(tgts), torch.from_numpy(mask), norm)
            loss.backward()
            opt.step()
            with torch.no_grad():
                for n, p in lp.items():
                    ema[n].mul_(decay).add_(p.detach(), alpha=1.0 - decay)
            worst = max(worst, abs(ours[s] - loss.item()) / abs(loss.item()))
            print(f"  step {s + 1}: loss C {ours[s]:.7f} torch {loss.item():.7f}")
        check(f"{tag} train: {steps} step losses (worst)", worst, 1e-5)
        check(f"{tag} train: losses fall (last/first)", ours[-1] / ours[0], 0.999)
        cat = lambda dd: np.concatenate([np.asarray(dd[n].detach() if torch.is_tensor(dd[n]) else dd[n],
                                                    np.float64).reshape(-1) for n, _, _, _ in lay])
        live = unflat(np.fromfile(os.path.join(d, "params.f32"), np.float32), lay)
        cema = unflat(np.fromfile(os.path.join(d, "ema.f32"), np.float32), lay)
        check(f"{tag} train: live adapters", rel(cat(live), cat(lp)), 1e-4)
        check(f"{tag} train: live adapter update θ−θ0", rel(cat(live) - T0, cat(lp) - T0), 1e-4)
        check(f"{tag} train: EMA adapters", rel(cat(cema), cat(ema)), 1e-4)
        check(f"{tag} train: EMA update θ_ema−θ0", rel(cat(cema) - T0, cat(ema) - T0), 1e-4)


def cli_inputs(name):
    """(SAFETUNE_CLI, the Alpaca file, SmolLM2's path, an emptied TMP/name) for the CLI checks; exit 77
    (skip) when the CLI or the data is absent."""
    import shutil
    cli = os.environ.get("SAFETUNE_CLI")
    data = os.path.join(os.environ.get("SAFETUNE_DATA_DIR", "data"), "alpaca", "alpaca_5000.json")
    path = smol_path()
    if not cli or not os.path.exists(data):
        print("skip: SAFETUNE_CLI or the Alpaca data absent")
        sys.exit(77)
    base = scratch.made(os.path.join(TMP, name))
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base)
    return cli, data, path, base


def smol_path():
    path = os.path.join(os.environ.get("SAFETUNE_MODEL_DIR", "models"), "SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.path.exists(path):
        print(f"skip: {path} absent")
        sys.exit(77)
    return path


def peft():
    """PEFT folder written by safetune: names, shapes and config keys through the Python
    safetensors package; merged HF / GGUF exports' logits vs base + adapter in the reference."""
    import json
    from safetensors import safe_open
    path = smol_path()
    d = scratch.made(os.path.join(TMP, "lora_parity_peft"))
    os.makedirs(d, exist_ok=True)
    r, alpha = 8, 16.0
    res = subprocess.run([TOOL, "peft", path, f"{r}:{alpha}:0.05:q_proj,v_proj,o_proj,down_proj:3:0:0.02:f32", d,
                          "export"],
                         capture_output=True, text=True)
    print(res.stdout.strip())
    if res.returncode != 0:
        print(res.stderr.strip())
        check("lora_tool peft (save, read back bit for bit, merge, export)", 1, 0)
        return
    ad = os.path.join(d, "adapter")
    cfg = json.load(open(os.path.join(ad, "adapter_config.json")))
    want = dict(peft_type="LORA", task_type="CAUSAL_LM", r=r, lora_alpha=alpha, lora_dropout=0.05,
                bias="none", use_dora=False, use_rslora=False, fan_in_fan_out=False)
    bad = [k for k, v in want.items() if cfg.get(k) != v]
    bad += [] if sorted(cfg.get("target_modules", [])) == sorted(["q_proj", "v_proj", "o_proj", "down_proj"]) \
        else ["target_modules"]
    print("adapter_config.json:", json.dumps(cfg, sort_keys=True))
    check(f"adapter_config.json keys differing from PEFT's ({bad})", len(bad), 0)
    base = R.load(path, torch.float64)
    c = base.cfg
    C, I, L = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    HD = c["num_attention_heads"] * c["head_dim"]
    KD = c["num_key_value_heads"] * c["head_dim"]
    dims = {"q_proj": ("self_attn", C, HD), "v_proj": ("self_attn", C, KD),
            "o_proj": ("self_attn", HD, C), "down_proj": ("mlp", I, C)}
    expect = {}
    for l in range(L):
        for mod, (par, fin, fout) in dims.items():
            pre = f"base_model.model.model.layers.{l}.{par}.{mod}."
            expect[pre + "lora_A.weight"] = (r, fin)
            expect[pre + "lora_B.weight"] = (fout, r)
    tensors = {}
    with safe_open(os.path.join(ad, "adapter_model.safetensors"), framework="pt") as f:
        for k in f.keys():
            tensors[k] = f.get_tensor(k)
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    check(f"adapter_model.safetensors: {len(got)} tensors with PEFT's names and shapes "
          f"(mismatches)", len(set(got.items()) ^ set(expect.items())), 0)
    nz = min(float(v.abs().max()) for k, v in tensors.items() if "lora_B" in k)
    check("adapter has nonzero B everywhere (1 / min max|B|)", 1.0 / max(nz, 1e-30), 1e3)
    V = c["vocab_size"]
    rng = np.random.default_rng(4)
    toks = rng.integers(0, V, (2, 10))
    with torch.no_grad():
        plain = base.forward(torch.from_numpy(toks)).numpy()
        base.set_lora({k: v.numpy() for k, v in tensors.items()}, alpha / r)
        want_logits = base.forward(torch.from_numpy(toks)).numpy()
        hf = R.LlamaRef.from_hf(os.path.join(d, "merged"), torch.float64).forward(torch.from_numpy(toks)).numpy()
        gg = R.LlamaRef.from_gguf(os.path.join(d, "merged.gguf"), torch.float64).forward(torch.from_numpy(toks)).numpy()
    check("adapter changes the logits (1 / rel(base+adapter, base))", 1.0 / rel(want_logits, plain), 1e3)
    check("merged HF export logits vs base + adapter", rel(hf, want_logits), 1e-5)
    check("merged GGUF export logits vs base + adapter", rel(gg, want_logits), 1e-5)


def peft_package():
    """The peft package (PEFT_SITE: a folder with peft + transformers installed beside the
    reference's torch) loads a safetune adapter onto transformers' LlamaForCausalLM / Qwen2: its
    logits equal the reference's base + adapter. Exit 77 when PEFT_SITE is not set."""
    site = os.environ.get("PEFT_SITE")
    if not site or not os.path.isdir(site):
        print("skip: PEFT_SITE (a folder with peft and transformers for this torch) not set")
        sys.exit(77)
    for i in (1, 2, 3):  # transformers 4.40 predates llama3 rope_scaling (model 0)
        tag, d = tiny_model(i)
        out = os.path.join(TMP, f"lora_peft_pkg_{tag}")
        os.makedirs(out, exist_ok=True)
        run("peft", d, "4:8:0.1:all:5:0:0.05:f32", out)
        rng = np.random.default_rng(5)
        toks = rng.integers(0, 128, (2, 12))
        np.save(os.path.join(out, "toks.npy"), toks)
        code = ("import sys, numpy as np, torch; sys.path.insert(0, sys.argv[1]);"
                "from transformers import AutoModelForCausalLM; from peft import PeftModel;"
                "m = AutoModelForCausalLM.from_pretrained(sys.argv[2], torch_dtype=torch.float32);"
                "p = PeftModel.from_pretrained(m, sys.argv[3]); p.eval();"
                "t = torch.from_numpy(np.load(sys.argv[4]));"
                "np.save(sys.argv[5], p(input_ids=t).logits.detach().double().numpy())")
        res_f = os.path.join(out, "peft_logits.npy")
        pr = subprocess.run([sys.executable, "-c", code, site, d, os.path.join(out, "adapter"),
                             os.path.join(out, "toks.npy"), res_f], capture_output=True, text=True)
        if pr.returncode != 0:
            print(pr.stderr[-1500:])
            check(f"{tag}: PeftModel.from_pretrained on transformers' model", 1, 0)
            continue
        from safetensors.numpy import load_file
        ref = R.load(d, torch.float64)
        with torch.no_grad():
            plain = ref.forward(torch.from_numpy(toks)).numpy()
            ref.set_lora(load_file(os.path.join(out, "adapter", "adapter_model.safetensors")), 8 / 4)
            want = ref.forward(torch.from_numpy(toks)).numpy()
        got = np.load(res_f)
        check(f"{tag}: adapter changes the logits (1 / rel)", 1.0 / rel(want, plain), 1e3)
        check(f"{tag}: peft PeftModel logits (fp32) vs reference base + adapter (fp64)", rel(got, want), 1e-5)


def load_adapter():
    """A PEFT folder given where a model is expected: its base (absolute or relative
    base_model_name_or_path) with the adapter merged; logits vs the reference base + adapter."""
    import json
    import shutil
    from safetensors.numpy import load_file
    tag, d = tiny_model(1)
    out = os.path.join(TMP, "lora_load_adapter")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    run("peft", d, "3:6:0:all:9:0:0.05:f32", out)
    ad = os.path.join(out, "adapter")
    rel_ad = os.path.join(out, "adapter_rel")
    shutil.copytree(ad, rel_ad)
    cfg = json.load(open(os.path.join(rel_ad, "adapter_config.json")))
    cfg["base_model_name_or_path"] = os.path.relpath(d, rel_ad)
    json.dump(cfg, open(os.path.join(rel_ad, "adapter_config.json"), "w"))
    rng = np.random.default_rng(6)
    toks = rng.integers(0, 128, (2, 9))
    tf = os.path.join(out, "tok.i32")
    toks.astype(np.int32).tofile(tf)
    ref = R.load(d, torch.float64)
    with torch.no_grad():
        plain = ref.forward(torch.from_numpy(toks)).numpy()
        ref.set_lora(load_file(os.path.join(ad, "adapter_model.safetensors")), 6 / 3)
        want = ref.forward(torch.from_numpy(toks)).numpy()
    check("adapter changes the logits (1 / rel)", 1.0 / rel(want, plain), 1e3)
    for what, path in (("absolute", ad), ("relative", rel_ad)):
        run("logits", path, tf, 2, 9, os.path.join(out, "lg.f32"))
        got = np.fromfile(os.path.join(out, "lg.f32"), np.float32).reshape(want.shape)
        check(f"model path = adapter folder ({what} base path): logits vs reference base + adapter",
              rel(got, want), 1e-4)
    cfg["base_model_name_or_path"] = "HuggingFaceTB/SmolLM2-135M-Instruct"
    json.dump(cfg, open(os.path.join(rel_ad, "adapter_config.json"), "w"))
    r = subprocess.run([TOOL, "logits", rel_ad, tf, "2", "9", os.path.join(out, "x.f32")],
                       capture_output=True, text=True)
    ok = r.returncode == 1 and "not a local file or folder" in r.stderr
    print(f"{'ok  ' if ok else 'FAIL'} Hub id as base: {r.stderr.strip()}")
    if not ok:
        failures.append("hub id base")


def train_cli():
    """safetune train --finetune lora on SmolLM2 + Alpaca rows: validation loss falls; final/ and
    final-ema/ are PEFT folders that load as models (--weights ema); a run resumed from its
    step-3 checkpoint (after copying it away) ends bit-identical (dropout on); LoRA options are
    refused with --finetune full, bad targets / r 0 are usage errors, and nothing is written."""
    import json
    import shutil
    cli, data, path, base = cli_inputs("lora_train_cli")
    run1, run2 = os.path.join(base, "run1"), os.path.join(base, "run2")
    args = ["train", "--model", path, "--data", data, "--finetune", "lora", "--lora-r", "8",
            "--lora-alpha", "16", "--lora-dropout", "0.1", "--lora-targets", "all", "--max-steps", "6",
            "--batch-size", "2", "--max-seq-len", "96", "--max-rows", "60", "--lr", "1e-3",
            "--ema-decay", "0.9", "--eval-every", "3", "--val-fraction", "0.1", "--save-every", "3",
            "--quiet"]
    r = subprocess.run([cli, *args, "--out", run1], capture_output=True, text=True)
    check(f"train --finetune lora exit ({r.stderr.strip()[-300:]})", r.returncode, 0)
    if r.returncode:
        return
    val = [json.loads(l)["val_loss"] for l in open(os.path.join(run1, "metrics.jsonl")) if "val_loss" in json.loads(l)]
    print("val_loss:", val)
    check("validation loss falls (last / first, 3 evaluations)", val[-1] / val[0] if len(val) == 3 else 9, 0.999)
    for f in ("final", "final-ema"):
        cfg = json.load(open(os.path.join(run1, f, "adapter_config.json")))
        check(f"{f}/ is a PEFT LoRA folder (r {cfg.get('r')}, {cfg.get('peft_type')})",
              0 if cfg.get("peft_type") == "LORA" and cfg.get("r") == 8 else 1, 0)
    os.makedirs(run2)
    shutil.copy(os.path.join(run1, "config.json"), run2)
    shutil.copytree(os.path.join(run1, "checkpoints", "step-00000003"),
                    os.path.join(run2, "checkpoints", "step-00000003"))
    with open(os.path.join(run2, "metrics.jsonl"), "w") as f:
        f.writelines(open(os.path.join(run1, "metrics.jsonl")).readlines()[:4])
    r = subprocess.run([cli, "train", "--config", os.path.join(run2, "config.json"), "--out", run2,
                        "--resume", "auto", "--quiet"], capture_output=True, text=True)
    check(f"resume from step 3 exit ({r.stderr.strip()[-200:]})", r.returncode, 0)
    for f in ("final", "final-ema"):
        a = open(os.path.join(run1, f, "adapter_model.safetensors"), "rb").read()
        b = open(os.path.join(run2, f, "adapter_model.safetensors"), "rb").read() \
            if os.path.exists(os.path.join(run2, f, "adapter_model.safetensors")) else b""
        check(f"resumed run's {f}/ adapter bit-identical (differs)", 0 if a == b else 1, 0)
    prompts = os.path.join(base, "p.txt")
    open(prompts, "w").write("What is the capital of France?\n")
    r = subprocess.run([cli, "generate", "--model", run1, "--weights", "ema", "--chat", "--prompts", prompts,
                        "--max-new-tokens", "8"], capture_output=True, text=True)
    check(f"generate --weights ema on the LoRA run ({r.stdout.strip()[:80]!r})", r.returncode, 0)
    # a LoRA flag is refused with --finetune full, and beside an adapter folder, even at its
    # default value (args give --lora-r 8, the default, first)
    for extra, needle in ((["--finetune", "full", "--lora-r", "4"], "--lora-r applies to LoRA"),
                          (["--finetune", "full", "--lora-r", "8"], "--lora-r applies to LoRA"),
                          (["--adapter", os.path.join(run1, "final"), "--lora-r", "8"],
                           "--adapter takes r, alpha and targets from the adapter folder: drop --lora-r"),
                          (["--lora-targets", "q_proj,qkv"], "\"qkv\" is not a target module"),
                          (["--lora-r", "0"], "lora_r = 0 is out of range")):
        out = os.path.join(base, "bad")
        a = [x for x in args]
        for k in range(0, len(extra), 2):
            if extra[k] in a:
                a[a.index(extra[k]) + 1] = extra[k + 1]
            else:
                a += extra[k:k + 2]
        r = subprocess.run([cli, *a, "--out", out], capture_output=True, text=True)
        ok = r.returncode == 2 and needle in r.stderr and not os.path.exists(out)
        print(f"{'ok  ' if ok else 'FAIL'} {' '.join(extra)}: exit {r.returncode}: {r.stderr.strip()[:160]}")
        if not ok:
            failures.append(" ".join(extra))


def bad_adapter():
    """Adapters that do not fit the base model or that safetune cannot apply: refused naming why."""
    import json
    import shutil
    from safetensors.numpy import save_file
    tag, d = tiny_model(0)
    other_tag, other = tiny_model(1)  # hidden 48 instead of 64
    out = os.path.join(TMP, "lora_bad_adapter")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    cfg0 = dict(peft_type="LORA", task_type="CAUSAL_LM", r=2, lora_alpha=4, lora_dropout=0.0,
                target_modules=["q_proj", "down_proj"], bias="none")

    def make(name, cfg=None, tensors=None, layers=2, r=2, C=64, I=96, HD=64):
        f = os.path.join(out, name)
        os.makedirs(f)
        json.dump(cfg0 if cfg is None else cfg, open(os.path.join(f, "adapter_config.json"), "w"))
        if tensors is None:
            tensors = {}
            for l in range(layers):
                p = f"base_model.model.model.layers.{l}."
                tensors[p + "self_attn.q_proj.lora_A.weight"] = np.zeros((r, C), np.float32)
                tensors[p + "self_attn.q_proj.lora_B.weight"] = np.zeros((HD, r), np.float32)
                tensors[p + "mlp.down_proj.lora_A.weight"] = np.zeros((r, I), np.float32)
                tensors[p + "mlp.down_proj.lora_B.weight"] = np.zeros((C, r), np.float32)
        save_file(tensors, os.path.join(f, "adapter_model.safetensors"))
        return f

    def expect(f, model, needle):
        r = subprocess.run([TOOL, "load", model, f], capture_output=True, text=True)
        msg = r.stdout.strip()
        ok = r.returncode == 1 and needle in msg
        print(f"{'ok  ' if ok else 'FAIL'} {os.path.basename(f)}: exit {r.returncode}: {msg}")
        if not ok:
            failures.append(os.path.basename(f))

    ok_dir = make("ok")
    r = subprocess.run([TOOL, "load", d, ok_dir], capture_output=True, text=True)
    check(f"a fitting adapter loads ({r.stdout.strip()})", 0 if r.stdout.strip() == "ok" else 1, 0)
    expect(ok_dir, other, "has shape")                                   # another base model
    expect(make("unknown_target", dict(cfg0, target_modules=["q_proj", "qkv_proj"])), d, "qkv_proj")
    expect(make("r0", dict(cfg0, r=0)), d, "\"r\" must be an integer >= 1")
    expect(make("not_lora", dict(cfg0, peft_type="PREFIX_TUNING")), d, "expected \"LORA\"")
    expect(make("dora", dict(cfg0, use_dora=True)), d, "use_dora")
    expect(make("rank_pattern", dict(cfg0, rank_pattern={"q_proj": 4})), d, "rank_pattern")
    expect(make("wrong_r", dict(cfg0, r=3)), d, "has shape")
    expect(make("more_layers", layers=3), d, "is for layer 2")
    expect(make("missing_tensor", dict(cfg0, target_modules=["q_proj", "down_proj", "up_proj"])), d,
           "up_proj.lora_A.weight missing")
    expect(make("extra_module", dict(cfg0, target_modules=["q_proj"])), d, "not a LoRA A/B of the target")
    expect(os.path.join(out, "absent"), d, "no adapter_config.json")
    broken = make("broken_json")  # a config cut short: invalid JSON located by line and column
    open(os.path.join(broken, "adapter_config.json"), "w").write('{"r": 2,\n "lora_alpha": 4,')
    expect(broken, d, "adapter_config.json: line 2, column 18: invalid JSON")


def adapter_cli():
    """--adapter DIR on generate / eval / serve / train: SmolLM2 + a PEFT folder gives the same
    greedy text as the adapter folder given as --model (and not the base's); an adapter for
    another base model, a folder that is no adapter, and an adapter folder as --model with
    --adapter are refused naming the cause, with no output written."""
    import shutil
    cli = os.environ.get("SAFETUNE_CLI")
    path = smol_path()
    data = os.path.join(os.environ.get("SAFETUNE_DATA_DIR", "data"), "alpaca", "alpaca_5000.json")
    if not cli or not os.path.exists(data):
        print("skip: SAFETUNE_CLI or the Alpaca data absent")
        sys.exit(77)
    base = os.path.join(TMP, "lora_adapter_cli")
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base)
    run("peft", path, "4:8.0:0:all:3:0:0.5:f32", base)  # B ~ N(0, 0.5²): changes greedy text
    ad = os.path.join(base, "adapter")
    tag, d = tiny_model(1)
    other = os.path.join(base, "other")
    os.makedirs(other)
    run("peft", d, "3:6:0:all:9:0:0.05:f32", other)
    other_ad = os.path.join(other, "adapter")

    def gen(out, *extra):
        r = subprocess.run([cli, "generate", *extra, "--prompt", "Name a colour.", "--chat",
                            "--max-new-tokens", "8", "--quiet", "--output", out], capture_output=True, text=True)
        txt = open(out).read() if os.path.exists(out) else None
        return r, txt

    r1, with_flag = gen(os.path.join(base, "a.jsonl"), "--model", path, "--adapter", ad)
    check(f"generate --adapter exit ({r1.stderr.strip()[-200:]})", r1.returncode, 0)
    r2, as_model = gen(os.path.join(base, "b.jsonl"), "--model", ad)
    r3, plain = gen(os.path.join(base, "c.jsonl"), "--model", path)
    resp = [json.loads(t)["response"] if t else None for t in (with_flag, as_model, plain)]
    print("responses:", resp)
    check("generate --model BASE --adapter AD = --model AD (greedy text)", 0.0 if resp[0] == resp[1] else 1.0, 0.0)
    check("the adapter changes the greedy text (it was applied)", 0.0 if resp[0] != resp[2] else 1.0, 0.0)

    r = subprocess.run([cli, "info", "--json", ad], capture_output=True, text=True)
    j = json.loads(r.stdout) if r.returncode == 0 else {}
    a = j.get("adapter", {})
    ok = (j.get("format") == "peft-lora" and a.get("r") == 4 and a.get("lora_alpha") == 8 and
          len(j.get("tensors", [])) == 2 * 7 * j["config"]["num_hidden_layers"])
    print(f"{'ok  ' if ok else 'FAIL'} info on an adapter folder: {r.stderr.strip()} {a}")
    if not ok:
        failures.append("info adapter")
    tk = [subprocess.run([cli, "tokenize", "--model", m, "Hello there"], capture_output=True, text=True)
          for m in (ad, path)]
    ok = tk[0].returncode == 0 and tk[0].stdout == tk[1].stdout
    print(f"{'ok  ' if ok else 'FAIL'} tokenize on an adapter folder = on its base: {tk[0].stderr.strip()}")
    if not ok:
        failures.append("tokenize adapter")

    def refused(what, args, want, out=None):
        r = subprocess.run([cli, *args], capture_output=True, text=True, timeout=300)
        ok = r.returncode != 0 and want in r.stderr and (out is None or not os.path.exists(out))
        print(f"{'ok  ' if ok else 'FAIL'} {what}: exit {r.returncode}: {r.stderr.strip()[-300:]}")
        if not ok:
            failures.append(what)

    o = os.path.join(base, "x.jsonl")
    refused("generate --adapter for another base model", ["generate", "--model", path, "--adapter", other_ad,
            "--prompt", "Hi", "--output", o], "lora_A", o)
    refused("generate --adapter not a folder", ["generate", "--model", path, "--adapter", os.path.join(base, "nope"),
            "--prompt", "Hi", "--output", o], "--adapter", o)
    refused("generate --adapter a model folder", ["generate", "--model", path, "--adapter", base,
            "--prompt", "Hi", "--output", o], "not a PEFT adapter folder", o)
    refused("generate --model ADAPTER --adapter ADAPTER", ["generate", "--model", ad, "--adapter", ad,
            "--prompt", "Hi", "--output", o], "adapter folder itself", o)
    eo = os.path.join(base, "eval_out")
    refused("eval utility --adapter not an adapter (no --out folder made)",
            ["eval", "utility", "--model", path, "--adapter", base, "--out", eo, "--no-truthfulqa",
             "--no-mtbench", "--data", data, "--max-rows", "20", "--quiet"], "not a PEFT adapter folder", eo)
    refused("eval utility --adapter for another base model", ["eval", "utility", "--model", path, "--adapter",
            other_ad, "--out", eo, "--no-truthfulqa", "--no-mtbench", "--data", data, "--max-rows", "20",
            "--quiet"], "lora_A")
    refused("serve --adapter for another base model", ["serve", "--model", path, "--adapter", other_ad,
            "--port", "0"], "lora_A")
    to = os.path.join(base, "train_out")
    refused("train --finetune lora --adapter for another base model", ["train", "--model", path, "--data", data,
            "--out", to, "--finetune", "lora", "--adapter", other_ad, "--max-steps", "1", "--quiet"], "lora_A")



def cli_bf16():
    """train --finetune lora --base-precision bf16 from the CLI: the base loaded straight into bf16
    (st_lora_base_load, one fp32 tensor at a time) gives bit for bit the losses, val_loss and the
    live and EMA adapters of the path that loads the fp32 model first and rounds it
    (SAFETUNE_LORA_BASE_VIA_FP32=1), from a GGUF (Q4_1, dequantised per tensor) and from a bf16 HF
    folder; its peak RSS is lower by at least half of the fp32 matrices (it fails when they are
    allocated); a run resumed from its step-2 checkpoint ends bit-identical; its EMA adapter
    folder loads as a model (the base file reloaded in fp32, the adapter merged)."""
    import shutil
    cli, data, path, base = cli_inputs("lora_cli_bf16")
    hf = os.path.join(base, "hf")  # SmolLM2 as a bf16 Hugging Face folder (θ0 merged with itself)
    r = subprocess.run([cli, "merge", "--base", path, "--model", path, "--merge", "linear:0", "--out", hf,
                        "--export-dtype", "bf16"], capture_output=True, text=True)
    check(f"merge to a bf16 HF folder exit ({r.stderr.strip()[-200:]})", r.returncode, 0)
    from safetensors import safe_open
    with safe_open(os.path.join(hf, "model.safetensors"), "np") as f:
        mat = sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys() if len(f.get_slice(k).get_shape()) == 2)
    args = ["train", "--data", data, "--finetune", "lora", "--base-precision", "bf16", "--lora-r", "4",
            "--lora-dropout", "0.1", "--max-steps", "4", "--batch-size", "2", "--max-seq-len", "64",
            "--max-rows", "40", "--lr", "1e-3", "--ema-decay", "0.9", "--eval-every", "2",
            "--val-fraction", "0.1", "--save-every", "2", "--quiet"]

    def train(model, out, via_fp32, extra=()):
        env = dict(os.environ)
        env.pop("SAFETUNE_LORA_BASE_VIA_FP32", None)
        if via_fp32:
            env["SAFETUNE_LORA_BASE_VIA_FP32"] = "1"
        errf = out + ".stderr"
        with open(errf, "w") as ef:
            p = subprocess.Popen([cli, *args, "--model", model, "--out", out, *extra], env=env,
                                 stdout=subprocess.DEVNULL, stderr=ef)
            _, status, ru = os.wait4(p.pid, 0)  # this child's own rusage: its peak RSS (KiB)
        p.returncode = os.waitstatus_to_exitcode(status)
        return p.returncode, open(errf).read(), ru.ru_maxrss

    def metrics(out):
        return [(j.get("loss"), j.get("val_loss")) for j in map(json.loads, open(os.path.join(out, "metrics.jsonl")))]

    for tag, model in (("GGUF Q4_1", path), ("HF bf16 folder", hf)):
        runs = {}
        for via in (0, 1):
            out = os.path.join(base, f"{'gguf' if model == path else 'hf'}-{via}")
            rc, err, peak = train(model, out, via)
            check(f"{tag}: train {'via fp32' if via else 'straight to bf16'} exit ({err.strip()[-200:]})", rc, 0)
            if rc:
                return
            runs[via] = (out, peak)
        (a, pa), (b, pb) = runs[0], runs[1]
        check(f"{tag}: losses and val_loss bit for bit ({metrics(a)[-1]} vs {metrics(b)[-1]})",
              0 if metrics(a) == metrics(b) and len(metrics(a)) >= 4 else 1, 0)
        for f in ("final", "final-ema"):
            x = open(os.path.join(a, f, "adapter_model.safetensors"), "rb").read()
            y = open(os.path.join(b, f, "adapter_model.safetensors"), "rb").read()
            check(f"{tag}: {f}/ adapter bit for bit (differs)", 0 if x == y else 1, 0)
        saved = (pb - pa) * 1024
        print(f"  peak RSS: straight {pa / 1024:.0f} MiB, via fp32 {pb / 1024:.0f} MiB; fp32 matrices "
              f"{mat * 4 / 2**20:.0f} MiB")
        check(f"{tag}: 1 − (peak RSS saved) / (fp32 matrices)", 1.0 - saved / (4.0 * mat), 0.5)
    # resume: the GGUF run's step-2 checkpoint continued (straight to bf16) ends bit-identical
    a = os.path.join(base, "gguf-0")
    run2 = os.path.join(base, "resumed")
    os.makedirs(run2)
    shutil.copy(os.path.join(a, "config.json"), run2)
    shutil.copytree(os.path.join(a, "checkpoints", "step-00000002"), os.path.join(run2, "checkpoints", "step-00000002"))
    with open(os.path.join(run2, "metrics.jsonl"), "w") as f:
        f.writelines(l for l in open(os.path.join(a, "metrics.jsonl")) if json.loads(l).get("step", 9) <= 2)
    r = subprocess.run([cli, "train", "--config", os.path.join(run2, "config.json"), "--out", run2, "--resume", "auto",
                        "--quiet"], capture_output=True, text=True)
    check(f"resume from step 2 exit ({r.stderr.strip()[-200:]})", r.returncode, 0)
    for f in ("final", "final-ema"):
        x = open(os.path.join(a, f, "adapter_model.safetensors"), "rb").read()
        q = os.path.join(run2, f, "adapter_model.safetensors")
        check(f"resumed run's {f}/ adapter bit-identical (differs)", 0 if os.path.exists(q) and open(q, "rb").read() == x else 1, 0)
    prompts = os.path.join(base, "p.txt")
    open(prompts, "w").write("What is the capital of France?\n")
    r = subprocess.run([cli, "generate", "--model", a, "--weights", "ema", "--chat", "--prompts", prompts,
                        "--max-new-tokens", "8"], capture_output=True, text=True)
    check(f"generate --weights ema on the run ({r.stdout.strip()[:80]!r}; {r.stderr.strip()[-120:]})", r.returncode, 0)


{"tiny": tiny, "bf16": bf16, "cli_bf16": cli_bf16, "adapter_cli": adapter_cli, "smollm": smollm, "train": train, "peft": peft, "peft_package": peft_package, "load_adapter": load_adapter, "train_cli": train_cli,
 "bad_adapter": bad_adapter}[CASE]()
print("PASS" if not failures else f"FAIL: {len(failures)} check(s)")
scratch.finish(not failures)
