"""check_model.py CASE MODEL_TOOL - our forward / KV-cache inference / gradients against the
independent PyTorch reference (tests/reference/llama_ref.py, evaluated in float64).

CASE: tiny          tiny random HF checkpoints (GQA, q/k/v bias (qwen2), llama3 and linear RoPE
                    scaling, tied and untied lm_head, a bf16 checkpoint): logits, infer, grads
      smollm_logits SmolLM2-135M-Instruct GGUF: logits of 3 prompts + KV-cache inference
      smollm_grads  SmolLM2-135M-Instruct GGUF: every parameter gradient, short sequences
Bounds: logits ‖ours−ref‖/‖ref‖ ≤ 1e-4; infer vs our full forward ≤ 1e-5; every gradient
tensor ≤ 1e-4 relative; loss ≤ 1e-5 relative. Exit 77 when the model file is absent."""
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
    print(f"{'ok  ' if ok else 'FAIL'} {what}: rel err {err:.3g} (bound {tol:g})", flush=True)
    if not ok:
        failures.append(what)


def run(*args):
    r = subprocess.run([TOOL, *map(str, args)], capture_output=True, text=True)
    if r.returncode != 0:
        print("model_tool failed:", r.stderr.strip(), file=sys.stderr)
        sys.exit(1)


def logits_and_infer(model_path, ref, toks, prefill, tag, d):
    B, T = toks.shape
    V = ref.cfg["vocab_size"]
    tf = os.path.join(d, "tok.i32")
    toks.astype(np.int32).tofile(tf)
    run("logits", model_path, tf, B, T, os.path.join(d, "logits.f32"))
    ours = np.fromfile(os.path.join(d, "logits.f32"), np.float32).reshape(B, T, V)
    with torch.no_grad():
        want = ref.forward(torch.from_numpy(toks)).numpy()
    for b in range(B):
        check(f"{tag} logits row {b}", rel(ours[b], want[b]), 1e-4)
    run("infer", model_path, tf, B, T, prefill, os.path.join(d, "infer.f32"))
    inf = np.fromfile(os.path.join(d, "infer.f32"), np.float32).reshape(B, T, V)
    pos = [prefill - 1] + list(range(prefill, T))
    check(f"{tag} infer (prefill {prefill} + decode) vs full forward",
          rel(inf[:, pos], ours[:, pos]), 1e-5)


def grads(model_path, ref, toks, tgts, mask, norm, tag, d, tol=1e-4):
    B, T = toks.shape
    f = {k: os.path.join(d, k) for k in ("tok.i32", "tgt.i32", "mask.f32")}
    toks.astype(np.int32).tofile(f["tok.i32"])
    tgts.astype(np.int32).tofile(f["tgt.i32"])
    mask.astype(np.float32).tofile(f["mask.f32"])
    run("grads", model_path, f["tok.i32"], f["tgt.i32"], f["mask.f32"], B, T, norm, d)
    params = ref.enable_grad()
    loss = ref.loss(torch.from_numpy(toks), torch.from_numpy(tgts), torch.from_numpy(mask), norm)
    loss.backward()
    ours_loss = float(open(os.path.join(d, "loss.txt")).read())
    check(f"{tag} loss ({ours_loss:.6f})", abs(ours_loss - loss.item()) / abs(loss.item()), 1e-5)
    g = np.fromfile(os.path.join(d, "grads.f32"), np.float32)
    worst, n = 0.0, 0
    names = set()
    for line in open(os.path.join(d, "layout.tsv")):
        name, off, numel = line.split("\t")
        off, numel = int(off), int(numel)
        names.add(name)
        want = params[name].grad.detach().numpy().reshape(-1)
        e = rel(g[off:off + numel], want)
        n += 1
        if e > tol:
            check(f"{tag} grad {name}", e, tol)
        worst = max(worst, e)
    assert names == set(params), f"layout names differ: {names ^ set(params)}"
    check(f"{tag} all {n} gradient tensors (worst)", worst, tol)


def tiny():
    rs3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
           "original_max_position_embeddings": 16}
    cases = [
        ("llama-gqa-untied-llama3", dict(model_type="llama", num_attention_heads=4,
                                         num_key_value_heads=2, tie_word_embeddings=False,
                                         rope_scaling=rs3, rope_theta=500000.0)),
        ("qwen2-bias-gqa-tied", dict(model_type="qwen2", num_attention_heads=6,
                                     num_key_value_heads=2, hidden_size=48,
                                     tie_word_embeddings=True, rms_norm_eps=1e-6,
                                     rope_theta=1000000.0)),
        ("llama-mha-tied-linear", dict(model_type="llama", num_attention_heads=4,
                                       num_key_value_heads=4, tie_word_embeddings=True,
                                       rope_scaling={"type": "linear", "factor": 2.0})),
        ("llama-mqa-bf16", dict(model_type="llama", num_attention_heads=4, num_key_value_heads=1,
                                num_hidden_layers=3)),
    ]
    rng = np.random.default_rng(0)
    for i, (tag, cfg) in enumerate(cases):
        d = os.path.join(TMP, f"model_parity_{tag}")
        os.makedirs(d, exist_ok=True)
        R.write_tiny_random(d, seed=i, dtype="BF16" if "bf16" in tag else "F32", **cfg)
        ref = R.load(d, torch.float64)
        V = ref.cfg["vocab_size"]
        B, T = 3, 70  # T > 64 exercises the blocked attention path
        toks = rng.integers(0, V, (B, T))
        logits_and_infer(d, ref, toks, 17, tag, d)
        tgts = rng.integers(0, V, (B, T))
        tgts[0, 3] = -100
        mask = (rng.random((B, T)) < 0.7).astype(np.float32)
        grads(d, ref, toks, tgts, mask, float(mask.sum() * 1.25), tag, d)


def smollm(kind):
    path = os.path.join(os.environ.get("SAFETUNE_MODEL_DIR", "models"),
                        "SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.path.exists(path):
        print(f"skip: {path} absent")
        sys.exit(77)
    ref = R.load(path, torch.float64)
    V = ref.cfg["vocab_size"]
    rng = np.random.default_rng(1)
    d = scratch.made(os.path.join(TMP, f"model_parity_smollm_{kind}"))
    os.makedirs(d, exist_ok=True)
    if kind == "logits":
        # "The capital of France is" + random ids: three prompts, one batch
        toks = rng.integers(0, V, (3, 12))
        toks[0, :5] = [504, 3575, 282, 4649, 314]
        logits_and_infer(path, ref, toks, 5, "smollm2", d)
    else:
        toks = rng.integers(0, V, (2, 8))
        tgts = np.concatenate([toks[:, 1:], rng.integers(0, V, (2, 1))], axis=1)
        mask = np.ones((2, 8), np.float32)
        mask[:, :3] = 0  # prompt tokens masked out
        grads(path, ref, toks, tgts, mask, float(mask.sum()), "smollm2", d)


if CASE == "tiny":
    tiny()
elif CASE.startswith("smollm_"):
    smollm(CASE.split("_", 1)[1])
else:
    sys.exit(f"unknown case {CASE}")
print("PASS" if not failures else f"FAIL: {len(failures)} check(s)")
scratch.finish(not failures)
