#!/usr/bin/env python3
"""Trainer / export parity and CLI end-to-end checks (one case per ctest test).

References are independent: tests/reference/llama_ref.py (PyTorch forward/loss, GGUF/HF
loading), torch.optim.AdamW + LambdaLR with the transformers schedule formulas +
torch.nn.utils.clip_grad_norm_ + a manual EMA, safetensors / gguf-py / tokenizers.
Usage: check_trainer.py CASE TRAINER_TOOL     (exit 77 = skipped: input absent)"""
import json
import math
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.environ.get("SAFETUNE_REPO", os.path.abspath(os.path.join(HERE, "../../..")))
sys.path.insert(0, os.path.join(REPO, "tests", "reference"))
sys.path.insert(0, os.path.join(REPO, "tests", "parity"))
import llama_ref  # noqa: E402
import scratch  # noqa: E402

torch.set_num_threads(os.cpu_count() or 1)
TMP = os.environ.get("SAFETUNE_TEST_TMP", "/tmp")
MODEL_DIR = os.environ.get("SAFETUNE_MODEL_DIR", os.path.join(REPO, "models"))
DATA_DIR = os.environ.get("SAFETUNE_DATA_DIR") or os.path.join(REPO, "data")
CLI = os.environ.get("SAFETUNE_CLI", os.path.join(REPO, "build", "safetune"))
SMOL = os.path.join(MODEL_DIR, "SmolLM2-135M-Instruct.Q4_1.gguf")
ALPACA = os.path.join(DATA_DIR, "alpaca", "alpaca_5000.json")
MISTRAL_TOK = os.path.join(DATA_DIR, "tokenizers", "mistral-7b")


def skip(msg):
    print("SKIP:", msg)
    sys.exit(77)


def fresh(name):
    d = os.path.join(TMP, "trainer_" + name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return scratch.made(d)


def run(args, **kw):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    return r


def must(args, **kw):
    r = run(args, **kw)
    if r.returncode != 0:
        print("command failed:", " ".join(map(str, args)), "\n", r.stdout, r.stderr)
        sys.exit(1)
    return r


def hf_lambda(kind, W, N, num_cycles=0.5):
    """transformers/optimization.py lr_lambda formulas."""
    def f(k):
        if kind == "constant":
            return 1.0
        if k < W:
            return float(k) / float(max(1, W))
        if kind == "constant_with_warmup":
            return 1.0
        if kind == "linear":
            return max(0.0, float(N - k) / float(max(1, N - W)))
        progress = float(k - W) / float(max(1, N - W))
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress)))
    return f


def read_batches(path, steps, n_micro):
    """n_micro[k]: micro-batches of step k (fewer than accum in an epoch's last window)."""
    raw = open(path, "rb").read()
    off, out = 0, []
    for k in range(steps):
        micro = []
        for _ in range(int(n_micro[k])):
            B, T = struct.unpack_from("<ii", raw, off)
            off += 8
            n = B * T
            inp = np.frombuffer(raw, np.int32, n, off).reshape(B, T); off += 4 * n
            tgt = np.frombuffer(raw, np.int32, n, off).reshape(B, T); off += 4 * n
            msk = np.frombuffer(raw, np.float32, n, off).reshape(B, T); off += 4 * n
            micro.append((inp.copy(), tgt.copy(), msk.copy()))
        out.append(micro)
    assert off == len(raw), "batches.bin size"
    return out


def read_flat(d, name, layout):
    a = np.fromfile(os.path.join(d, name), np.float32)
    return {n: torch.from_numpy(a[o:o + k].copy()) for n, o, k in layout}


def rel(a, b):
    return float((a - b).norm() / max(b.norm(), 1e-30))


def train_case(tool, model, out, opts, check_weights=True, tol=1e-4):
    """Run trainer_tool train, replay the same batches in PyTorch, compare."""
    must([tool, "train", model, out] + [f"{k}={v}" for k, v in opts.items()])
    ours = np.loadtxt(os.path.join(out, "steps.txt"), ndmin=2)
    steps = len(ours)
    batches = read_batches(os.path.join(out, "batches.bin"), steps, ours[:, 4])
    layout = [(l.split()[0], int(l.split()[1]), int(l.split()[2]))
              for l in open(os.path.join(out, "layout.txt"))]
    ref = llama_ref.load(model)
    params = ref.enable_grad()
    theta0 = {n: p.detach().clone() for n, p in params.items()}
    nodecay = lambda n: n.endswith("norm.weight") or n.endswith(".bias")
    groups = [{"params": [p for n, p in params.items() if not nodecay(n)], "weight_decay": float(opts["wd"])},
              {"params": [p for n, p in params.items() if nodecay(n)], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=float(opts["lr"]), betas=(float(opts["beta1"]), float(opts["beta2"])),
                            eps=float(opts.get("eps", 1e-8)))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, hf_lambda(opts["sched"], int(opts["warmup"]), steps))
    beta = float(opts["ema"])
    ema = {n: p.detach().clone() for n, p in params.items()}
    worst = 0.0
    for s in range(steps):
        opt.zero_grad()
        norm = sum(float(m.sum()) for _, _, m in batches[s])
        total = 0.0
        for inp, tgt, msk in batches[s]:
            l = ref.loss(torch.from_numpy(inp), torch.from_numpy(tgt), torch.from_numpy(msk), norm)
            l.backward()
            total += float(l)
        alpha = float(opts.get("l2sp", 0))
        if alpha > 0:  # coupled L2-SP: (α/2)‖θ−θ0‖² in the loss, reported apart from the task loss
            pen = sum(0.5 * alpha * ((p - theta0[n]) ** 2).sum() for n, p in params.items())
            pen.backward()
            share = alpha * math.sqrt(2.0 * float(pen) / alpha)  # ‖α(θ−θ0)‖, the penalty's gradient norm
            print(f"  L2-SP: penalty {float(pen):.6g}, its gradient norm {share:.4g} of the total below")
        lr = opt.param_groups[0]["lr"]
        gn = float(torch.nn.utils.clip_grad_norm_(list(params.values()), float(opts["clip"])))
        opt.step()
        sched.step()
        with torch.no_grad():
            for n, p in params.items():
                ema[n].mul_(beta).add_(p.detach(), alpha=1.0 - beta)
        c_loss, c_lr, c_gn = ours[s][1:4]
        e = max(abs(c_loss - total) / abs(total), abs(c_gn - gn) / gn)
        worst = max(worst, e)
        print(f"step {s + 1}: loss C {c_loss:.7f} torch {total:.7f}  lr C {c_lr:.6g} torch {lr:.6g}  "
              f"grad_norm C {c_gn:.6f} torch {gn:.6f}")
        if abs(c_lr - lr) > 1e-12 * max(1.0, lr):
            print("FAIL: lr differs")
            return False
    ok = worst <= tol
    print(f"max rel error of loss / grad norm over {steps} steps: {worst:.2e} (tol {tol:.0e})")
    if check_weights:
        live, cema = read_flat(out, "live.bin", layout), read_flat(out, "ema.bin", layout)
        cat = lambda d: torch.cat([d[n].detach().reshape(-1).float() for n, _, _ in layout])
        T0, L, E, CL, CE = cat(theta0), cat(params), cat(ema), cat(live), cat(cema)
        rl, re_ = rel(CL, L), rel(CE, E)
        ul, ue = rel(CL - T0, L - T0), rel(CE - T0, E - T0)
        print(f"final live weights rel {rl:.2e} (update rel {ul:.2e}); EMA rel {re_:.2e} (update rel {ue:.2e})")
        ok = ok and rl <= tol and re_ <= tol
    print("->", "ok" if ok else "FAIL")
    return ok


BASE = dict(lr=3e-3, wd=0.1, beta1=0.9, beta2=0.95, eps=1e-8, sched="cosine", warmup=3, batch=4,
            accum=2, steps=10, clip=1.0, ema=0.9, max_seq=24, rows=40, max_len=30)


def case_epoch_windows(tool):
    """Issue 11: 7 rows, batch 1, grad_accum 3, --epochs 1 -> windows of 3, 3 and 1 micro-batches,
    3 optimiser steps, each row once, epochs 3/7, 6/7, 1; the short window's loss is normalised
    over its own unmasked tokens, as PyTorch's replay of the same batches computes it."""
    d = fresh("epoch_windows")
    mdir = os.path.join(d, "model")
    llama_ref.write_tiny_random(mdir, seed=5, tie_word_embeddings=True, num_attention_heads=4, num_key_value_heads=4)
    opts = dict(BASE, batch=1, accum=3, steps=0, epochs=1, rows=7, sched="linear", warmup=0)
    ok = train_case(tool, mdir, d, opts)
    ours = np.loadtxt(os.path.join(d, "steps.txt"), ndmin=2)
    micro, epochs = [int(x) for x in ours[:, 4]], [float(x) for x in ours[:, 5]]
    batches = read_batches(os.path.join(d, "batches.bin"), len(ours), micro)
    rows = [tuple(inp[0].tolist()) for step in batches for inp, _, _ in step]
    good = micro == [3, 3, 1] and epochs == [3 / 7, 6 / 7, 1.0] and len(rows) == 7 and len(set(rows)) == 7
    print(f"windows {micro}, epochs {epochs}, {len(set(rows))} distinct rows of {len(rows)}: {'ok' if good else 'FAIL'}")
    return ok and good


def case_l2sp_coupled(tool):
    """DEFENSES.md §2: 10 steps of coupled L2-SP (α = 20: from step 3 on its gradient is a large
    share of the clipped total at lr 3e-3) against PyTorch with (α/2)‖θ−θ0‖² added to the loss: loss, grad norm and the
    final weights (rel <= 1e-4)."""
    d = fresh("l2sp_coupled")
    mdir = os.path.join(d, "model")
    llama_ref.write_tiny_random(mdir, seed=3, tie_word_embeddings=False, num_attention_heads=4, num_key_value_heads=2)
    return train_case(tool, mdir, d, dict(BASE, l2sp=20))


def case_steps(tool, tied):
    d = fresh("steps_tied" if tied else "steps_gqa")
    mdir = os.path.join(d, "model")
    llama_ref.write_tiny_random(mdir, seed=3, tie_word_embeddings=tied, num_attention_heads=4,
                                num_key_value_heads=2 if not tied else 4)
    # clip 1.0 is active: random-init gradients have norms of a few units
    return train_case(tool, mdir, d, dict(BASE))


def case_accum_bf16(tool):
    d = fresh("accum")
    mdir = os.path.join(d, "model")
    llama_ref.write_tiny_random(mdir, seed=5)
    ok = True
    outs = {}
    for name, b, k in (("b8", 8, 1), ("b2x4", 2, 4)):
        o = os.path.join(d, name)
        os.makedirs(o)
        must([tool, "train", mdir, o] + [f"{kk}={v}" for kk, v in dict(BASE, batch=b, accum=k, steps=4, max_len=40, max_seq=40).items()])
        outs[name] = np.fromfile(os.path.join(o, "live.bin"), np.float32)
        outs[name + "_ema"] = np.fromfile(os.path.join(o, "ema.bin"), np.float32)
    p0 = torch.from_numpy(outs["b8"]); p1 = torch.from_numpy(outs["b2x4"])
    r = rel(p1, p0)
    r_e = rel(torch.from_numpy(outs["b2x4_ema"]), torch.from_numpy(outs["b8_ema"]))
    l8 = np.loadtxt(os.path.join(d, "b8", "steps.txt"), ndmin=2)
    l2 = np.loadtxt(os.path.join(d, "b2x4", "steps.txt"), ndmin=2)
    dl = float(np.max(np.abs(l8[:, 1] - l2[:, 1]) / np.abs(l8[:, 1])))
    print(f"grad_accum 4 x batch 2 vs batch 8 (rows of lengths 3..40): final weights rel {r:.2e}, "
          f"EMA rel {r_e:.2e}, losses rel {dl:.2e} (tol 1e-5)")
    ok = r <= 1e-5 and r_e <= 1e-5 and dl <= 1e-5
    # bf16 matmuls: same trajectory as the fp32 PyTorch reference within bf16 tolerance
    o = os.path.join(d, "bf16")
    os.makedirs(o)
    print("bf16 matmul mode vs fp32 PyTorch reference (tolerance 3e-2):")
    ok = train_case(tool, mdir, o, dict(BASE, bf16=1, steps=4), check_weights=False, tol=3e-2) and ok
    return ok


def case_smollm_step(tool):
    if not os.path.exists(SMOL):
        skip(f"{SMOL} absent")
    d = fresh("smollm_step")
    # one AdamW step on the real weights, 4 rows of <= 16 tokens
    return train_case(tool, SMOL, d, dict(BASE, lr=1e-4, sched="constant", warmup=0, batch=4, accum=1,
                                          steps=1, rows=6, max_len=16, max_seq=16), tol=1e-4)


def compare_logits(d_out, model_dir, tol, what, gguf=False):
    tok = np.fromfile(os.path.join(d_out, "tokens.bin"), np.int32)
    ours = np.fromfile(os.path.join(d_out, "logits.bin"), np.float32)
    m = llama_ref.LlamaRef.from_gguf(model_dir) if gguf else llama_ref.LlamaRef.from_hf(model_dir)
    with torch.no_grad():
        ref = m.forward(torch.from_numpy(tok.astype(np.int64))[None]).reshape(-1)
    r = rel(torch.from_numpy(ours), ref)
    print(f"{what}: logits rel vs PyTorch reference {r:.2e} (tol {tol:.0e})")
    return r <= tol


def case_export_tiny(tool):
    from safetensors.numpy import load_file
    ok = True
    for tied in (False, True):
        d = fresh("export_tiny" + ("_tied" if tied else ""))
        src = os.path.join(d, "src")
        llama_ref.write_tiny_random(src, seed=9, tie_word_embeddings=tied)
        r = must([tool, "export", src, d])
        print(r.stdout.strip())
        a, b = load_file(os.path.join(src, "model.safetensors")), load_file(os.path.join(d, "hf_f32", "model.safetensors"))
        same = set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
        print(f"tied={tied}: safetensors F32 export has the same tensors, bit-exact: {same}")
        ok = ok and same
        ok = compare_logits(d, os.path.join(d, "hf_f32"), 1e-5, "  HF F32 export (llama_ref.from_hf)") and ok
        ok = compare_logits(d, os.path.join(d, "f32.gguf"), 1e-5, "  GGUF F32 export (llama_ref.from_gguf, gguf-py + unpermute)", gguf=True) and ok
        ok = compare_logits(d, os.path.join(d, "bf16.gguf"), 3e-2, "  GGUF BF16 export", gguf=True) and ok
        ok = compare_logits(d, os.path.join(d, "hf_bf16"), 3e-2, "  HF BF16 export") and ok
        cfg = json.load(open(os.path.join(d, "hf_f32", "config.json")))
        ok = ok and cfg["tie_word_embeddings"] == tied
    print("->", "ok" if ok else "FAIL")
    return ok


TEXTS = ["Hello world", "  leading spaces and   runs\n\nnewlines\t tabs", "digits 1234567 and 3.14159",
         "Ünïcödé — em dash, 日本語のテキスト, emoji 🤖🎉", "<|im_start|>user\nHi there<|im_end|>\n",
         "code: def f(x):\n    return x**2  # comment", "", "'s 't 're CAPS MiXeD", "a\u00a0b\u2009c"]


def case_export_smollm(tool):
    if not os.path.exists(SMOL):
        skip(f"{SMOL} absent")
    from tokenizers import Tokenizer
    d = fresh("export_smollm")
    r = must([tool, "export", SMOL, d, "quick"])
    print(r.stdout.strip())
    texts = list(TEXTS)
    if os.path.exists(ALPACA):
        rows = json.load(open(ALPACA))[:200]
        texts += [x["instruction"] + ("\n\n" + x["input"] if x["input"] else "") + "\n" + x["output"] for x in rows]
    with open(os.path.join(d, "texts.txt"), "w") as f:
        for t in texts:
            f.write(t.replace("\\", "\\\\").replace("\n", "\\n") + "\n")
    must([tool, "encode", SMOL, os.path.join(d, "texts.txt"), os.path.join(d, "ids.txt")])
    ours = [l.rstrip("\n") for l in open(os.path.join(d, "ids.txt"))]
    tk = Tokenizer.from_file(os.path.join(d, "hf_f32", "tokenizer.json"))
    bad = 0
    for t, o in zip(texts, ours):
        ids = " ".join(map(str, tk.encode(t, add_special_tokens=False).ids))
        if ids != o:
            bad += 1
            if bad < 4:
                print("MISMATCH", repr(t[:60]), "\n  tokenizers:", ids[:120], "\n  safetune:  ", o[:120])
    rt = tk.decode(tk.encode(TEXTS[3]).ids)
    print(f"tokenizer.json from GGUF metadata: {len(texts)} texts, {bad} id mismatches vs safetune's "
          f"tokenizer; decode round trip {'ok' if rt == TEXTS[3] else 'differs'}")
    tc = json.load(open(os.path.join(d, "hf_f32", "tokenizer_config.json")))
    has_tpl = "chat_template" in tc and "im_start" in tc["chat_template"]
    print("tokenizer_config.json chat_template present:", has_tpl)
    ok = bad == 0 and rt == TEXTS[3] and has_tpl and len(ours) == len(texts)
    ok = compare_logits(d, os.path.join(d, "hf_f32"), 1e-4, "HF F32 export of SmolLM2 (llama_ref.from_hf)") and ok
    print("->", "ok" if ok else "FAIL")
    return ok


# ---- CLI end-to-end --------------------------------------------------------------------------

def tiny_chat_model(d, **over):
    """Tiny random Llama with the Mistral tokenizer (vocab 32000) so the CLI can render chats."""
    if not os.path.exists(os.path.join(MISTRAL_TOK, "tokenizer.json")):
        skip(f"{MISTRAL_TOK}/tokenizer.json absent")
    cfg = dict(vocab_size=32000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, bos_token_id=1, eos_token_id=2)
    cfg.update(over)
    llama_ref.write_tiny_random(d, seed=1, **cfg)
    shutil.copy(os.path.join(MISTRAL_TOK, "tokenizer.json"), d)
    tc = json.load(open(os.path.join(MISTRAL_TOK, "tokenizer_config.json")))
    # Mistral's template has no system block; use the Llama-2 one (same [INST] format)
    tc["chat_template"] = LLAMA2_TEMPLATE
    json.dump(tc, open(os.path.join(d, "tokenizer_config.json"), "w"))
    return d


LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = '<<SYS>>\\n' + messages[0]['content'] + '\\n<</SYS>>\\n\\n' %}"
    "{% else %}{% set loop_messages = messages %}{% set system_message = '' %}{% endif %}"
    "{% for message in loop_messages %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + (system_message if loop.index0 == 0 else '') + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + ' ' + eos_token }}{% endif %}{% endfor %}")


def train_args(model, out, *extra):
    return [CLI, "train", "--model", model, "--data", ALPACA, "--data-format", "alpaca", "--out", out,
            "--max-rows", "64", "--max-seq-len", "48", "--batch-size", "2", "--grad-accum", "2",
            "--lr", "1e-3", "--warmup-steps", "2", "--lr-schedule", "cosine", "--ema-decay", "0.9",
            "--val-fraction", "0.1", "--eval-every", "5", "--quiet"] + list(extra)


def losses(out):
    res = {}
    for line in open(os.path.join(out, "metrics.jsonl")):
        # exact text of the loss field (no float parsing)
        step = json.loads(line)["step"]
        frag = line.split('"loss":', 1)[1].split(",", 1)[0]
        res[step] = frag
    return res


def ema_fields(out):
    """step -> exact text of the theta_ema_dist field (an object keyed by decay)."""
    res = {}
    for line in open(os.path.join(out, "metrics.jsonl")):
        step = json.loads(line)["step"]
        res[step] = line.split('"theta_ema_dist":', 1)[1].split("}", 1)[0]
    return res


def same_final(out, ref_out):
    """final/, final-ema/ and final-ema-0.5/ weights byte-identical to the reference run's."""
    for sub in ("final", "final-ema", "final-ema-0.5"):
        a, b = os.path.join(out, sub, "model.safetensors"), os.path.join(ref_out, sub, "model.safetensors")
        if not (os.path.exists(a) and os.path.exists(b)) or open(a, "rb").read() != open(b, "rb").read():
            print(f"{sub}/model.safetensors differs from the reference run's (or is missing)")
            return False
    return True


def case_resume_kill(tool):
    if not os.path.exists(ALPACA):
        skip(f"{ALPACA} absent")
    d = fresh("resume")
    model = tiny_chat_model(os.path.join(d, "model"))
    # two EMA decays: both averages live in the checkpoints and must resume bit-identically
    targs = lambda *a: train_args(*a) + ["--ema-decay", "0.9,0.5"]
    steps = "24"
    ref_out = os.path.join(d, "ref")
    must(targs(model, ref_out, "--max-steps", steps, "--save-every", "3"))
    ref = losses(ref_out)
    ref_ema = ema_fields(ref_out)
    ok = len(ref) == 25 and all('"0.9":' in v and '"0.5":' in v for v in ref_ema.values())  # step 0 + 24
    print(f"reference: {len(ref)} records, theta_ema_dist keyed by decay: {ok}")
    rng = random.Random(int(os.environ.get("SAFETUNE_TEST_SEED", time.time())))
    # 1) kill right after a random checkpoint appears
    out = os.path.join(d, "killed")
    target = rng.choice([3, 6, 9, 12, 15])
    p = subprocess.Popen(targs(model, out, "--max-steps", steps, "--save-every", "3"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ck = os.path.join(out, "checkpoints", f"step-{target:08d}")
    t0 = time.time()
    while not os.path.exists(ck) and p.poll() is None and time.time() - t0 < 60:
        time.sleep(0.002)
    p.send_signal(signal.SIGKILL)
    p.wait()
    done_before = max(losses(out)) if os.path.exists(os.path.join(out, "metrics.jsonl")) else 0
    print(f"killed after checkpoint step {target} (metrics had reached step {done_before})")
    r = run(targs(model, out, "--max-steps", steps, "--save-every", "3", "--resume", "auto"))
    print(r.stderr.strip().splitlines()[0] if r.stderr.strip() else "")
    got = losses(out)
    same = r.returncode == 0 and got == ref and ema_fields(out) == ref_ema and same_final(out, ref_out)
    print(f"resume after SIGKILL: {len(got)} loss records, losses, both EMA drifts and final/, final-ema/ "
          f"(0.9), final-ema-0.5/ bit-identical to the uninterrupted run: {same}")
    ok = ok and same
    # 1b) Ctrl-C (SIGINT) with no checkpoints asked for: the step ends, a checkpoint of it is
    # saved, exit 130 with a message; --resume auto then continues bit-identically
    for attempt in range(3):
        out = os.path.join(d, f"sigint{attempt}")
        p = subprocess.Popen(targs(model, out, "--max-steps", steps, "--save-every", "0"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        met = os.path.join(out, "metrics.jsonl")
        t0 = time.time()
        while p.poll() is None and time.time() - t0 < 60 and not (os.path.exists(met) and len(losses(out)) >= 2):
            time.sleep(0.002)
        p.send_signal(signal.SIGINT)
        err = p.communicate()[1]
        if p.returncode == 0:  # finished before the signal arrived: try again
            continue
        stopped = max(losses(out))
        ck = os.path.join(out, "checkpoints", f"step-{stopped:08d}")
        good = (p.returncode == 130 and f"interrupted after step {stopped} of 24" in err and "--resume auto" in err
                and run([tool, "verify", ck]).returncode == 0 and not os.path.exists(os.path.join(out, "final")))
        print(f"SIGINT: exit {p.returncode}, stopped after step {stopped}, checkpoint saved and valid: {good}")
        r = run(targs(model, out, "--max-steps", "1", "--save-every", "0", "--resume", "auto"))
        good = r.returncode == 1 and f"at step {stopped}, past this run's 1 step;" in r.stderr
        print(f"resume with fewer --max-steps than the checkpoint's step: refused: {good}")
        ok = ok and good
        r = run(targs(model, out, "--max-steps", steps, "--save-every", "0", "--resume", "auto"))
        same = r.returncode == 0 and losses(out) == ref and ema_fields(out) == ref_ema and same_final(out, ref_out)
        print(f"--resume auto after SIGINT: losses, EMA drifts and final weights bit-identical: {same}")
        ok = ok and good and same
        break
    else:
        print("SIGINT: the run finished before the signal three times (machine too fast?)")
        ok = False
    # 2) kills at random moments (some during a save): every step-* folder verifies, resume works
    out = os.path.join(d, "random")
    kills = 0
    for attempt in range(8):
        args = targs(model, out, "--max-steps", steps, "--save-every", "1", "--keep-checkpoints", "3")
        if os.path.exists(os.path.join(out, "checkpoints")):
            args += ["--resume", "auto"]
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 1.5))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.wait()
        ckd = os.path.join(out, "checkpoints")
        for name in (os.listdir(ckd) if os.path.exists(ckd) else []):
            if name.startswith("step-") and name[5:].isdigit():
                v = run([tool, "verify", os.path.join(ckd, name)])
                if v.returncode != 0:
                    print("HALF-WRITTEN CHECKPOINT LOADS:", name, v.stdout)
                    ok = False
    r = run(targs(model, out, "--max-steps", steps, "--save-every", "1", "--keep-checkpoints", "3",
                       "--resume", "auto"))
    got = losses(out)
    same = r.returncode == 0 and got == ref and ema_fields(out) == ref_ema and same_final(out, ref_out)
    left = sorted(os.listdir(os.path.join(out, "checkpoints")))
    print(f"{kills} random SIGKILLs then --resume auto: losses bit-identical: {same}; checkpoints kept: {left}")
    ok = ok and same and left == ["step-00000022", "step-00000023", "step-00000024"]
    # a folder left by a prune killed mid-deletion, by a process that is gone: --resume auto on
    # the finished run (no step left to save, so no prune) still removes it
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = os.path.join(out, "checkpoints", f"step-00000021.old.{dead.pid}")
    os.makedirs(stale)
    open(os.path.join(stale, "params.bin"), "wb").close()
    # and the temporary folder of a final export that was killed
    stale_final = os.path.join(out, f"final.tmp.{dead.pid}")
    os.makedirs(stale_final)
    open(os.path.join(stale_final, f"model.safetensors.tmp.{dead.pid}"), "wb").close()
    # and a complete checkpoint beyond --keep-checkpoints (a kill between a save and its prune)
    shutil.copytree(os.path.join(out, "checkpoints", "step-00000022"),
                    os.path.join(out, "checkpoints", "step-00000019"))
    r = run(targs(model, out, "--max-steps", steps, "--save-every", "1", "--keep-checkpoints", "3",
                       "--resume", "auto"))
    left = sorted(os.listdir(os.path.join(out, "checkpoints")))
    gone = r.returncode == 0 and not os.path.exists(stale) and not os.path.exists(stale_final) and losses(out) == ref
    print(f"stale {os.path.basename(stale)} a final.tmp folder and an extra step-00000019 removed by --resume auto on the finished run: {gone}; kept: {left}")
    ok = ok and gone and left == ["step-00000022", "step-00000023", "step-00000024"]
    print("->", "ok" if ok else "FAIL")
    return ok


def expect_fail(args, must_contain, what, env=None):
    r = run(args, env=env)
    err = r.stderr.strip()
    good = r.returncode != 0 and all(s in err for s in must_contain)
    print(f"{what}: exit {r.returncode}: {err.splitlines()[-1] if err else '(no message)'} -> {'ok' if good else 'FAIL'}")
    if not good:
        print(err)
    return good


def case_bad_input(tool):
    if not os.path.exists(ALPACA):
        skip(f"{ALPACA} absent")
    d = fresh("bad")
    model = tiny_chat_model(os.path.join(d, "model"))
    ok = True
    bad = os.path.join(d, "bad.jsonl")
    with open(bad, "w") as f:
        f.write('{"instruction": "a", "response": "b"}\n{"instruction": "c", "response": "d"}\n{"instruction": "e"}\n')
    a = train_args(model, os.path.join(d, "o1"), "--max-steps", "2")
    a[a.index("--data") + 1] = bad
    a[a.index("--data-format") + 1] = "dolly"
    ok = expect_fail(a, [bad, "line 3"], "row missing its response") and ok
    empty = os.path.join(d, "empty.json")
    open(empty, "w").write("[]")
    a = train_args(model, os.path.join(d, "o2"), "--max-steps", "2")
    a[a.index("--data") + 1] = empty
    ok = expect_fail(a, [empty], "empty dataset") and ok
    a = train_args(model, os.path.join(d, "o3"), "--max-steps", "2", "--batch-size", "80")
    ok = expect_fail(a, ["batch_size = 80"], "batch larger than the data") and ok
    # inf weight -> nan loss at step 1: no checkpoint, no final export
    infm = os.path.join(d, "infmodel")
    shutil.copytree(model, infm)
    from safetensors.torch import load_file, save_file
    w = load_file(os.path.join(infm, "model.safetensors"))
    w["model.norm.weight"][0] = float("inf")
    save_file(w, os.path.join(infm, "model.safetensors"), metadata={"format": "pt"})
    o4 = os.path.join(d, "o4")
    ok = expect_fail(train_args(infm, o4, "--max-steps", "3", "--eval-every", "0"), ["step 1", "nan"], "model with an inf weight") and ok
    ok = ok and not os.path.exists(os.path.join(o4, "final"))
    # injected nan at step 5 with checkpoints every 2: step-4 kept and valid, no final/
    o5 = os.path.join(d, "o5")
    env = dict(os.environ, SAFETUNE_DEBUG_NAN_STEP="5")
    ok = expect_fail(train_args(model, o5, "--max-steps", "8", "--save-every", "2", "--keep-checkpoints", "5"),
                     ["step 5", "nan", "step-00000004"], "NaN loss at step 5 (SAFETUNE_DEBUG_NAN_STEP)", env=env) and ok
    v = run([tool, "verify", os.path.join(o5, "checkpoints", "step-00000004")])
    kept = v.returncode == 0 and not os.path.exists(os.path.join(o5, "final"))
    print("last good checkpoint step-4 valid, no final export:", kept)
    ok = ok and kept
    r = run(train_args(model, o5, "--max-steps", "8", "--save-every", "2", "--resume", "auto"))
    print("resume after the NaN stop (without the injection):", "ok" if r.returncode == 0 else r.stderr)
    ok = ok and r.returncode == 0
    # resume with other data of the same row count (one answer changed): refused, not silently mixed
    rows = json.load(open(ALPACA))[:64]
    rows[10] = dict(rows[10], output=rows[10]["output"] + " (edited)")
    other = os.path.join(d, "other.json")
    json.dump(rows, open(other, "w"))
    a = train_args(model, o5, "--max-steps", "10", "--save-every", "2", "--resume", "auto")
    a[a.index("--data") + 1] = other
    ok = expect_fail(a, ["training data differ", "step-00000008"], "resume with edited data") and ok
    # the user's results inside a run folder (README: eval --out RUN/safety) do not block it
    os.makedirs(os.path.join(o5, "safety"), exist_ok=True)
    open(os.path.join(o5, "safety", "summary.json"), "w").write("{}")
    a = train_args(model, o5, "--max-steps", "6", "--save-every", "2", "--resume", "auto")
    r = run(a)
    good = "holds 'safety'" not in r.stderr and "8 steps or more" in r.stderr
    print(f"a run folder holding the user's eval results is still the run's: {good}")
    ok = ok and good
    # a bf16 export: `info` shows the checkpoint's torch_dtype, not the in-memory fp32
    ob = os.path.join(d, "o_bf16")
    must(train_args(model, ob, "--max-steps", "1", "--save-weights", "live", "--export-dtype", "bf16"))
    r = run([CLI, "info", os.path.join(ob, "final")])
    good = r.returncode == 0 and '"bfloat16"' in r.stdout and '"float32"' not in r.stdout
    print(f"info on a bf16 export shows torch_dtype bfloat16: {good}")
    ok = ok and good
    # --overwrite with --resume: a usage error; --resume on an exported model: named as such
    r = run(train_args(model, o5, "--max-steps", "8", "--resume", "auto", "--overwrite"))
    good = r.returncode == 2 and "contradict" in r.stderr
    print(f"--overwrite with --resume: exit {r.returncode} -> {'ok' if good else 'FAIL'}")
    ok = ok and good
    ok = expect_fail(train_args(model, os.path.join(d, "o_fin"), "--max-steps", "2", "--resume", model),
                     ["an exported model"], "--resume on a model folder") and ok
    # resume with fewer steps than the checkpoint has done: refused (the weights would not be the
    # config's run), config.json unchanged
    cfg_before = open(os.path.join(o5, "config.json")).read()
    a = train_args(model, o5, "--max-steps", "6", "--save-every", "2", "--resume", "auto")
    ok = expect_fail(a, ["--max-steps 6", "8 steps or more"], "resume with --max-steps below the finished run's") and ok
    ok = ok and open(os.path.join(o5, "config.json")).read() == cfg_before
    # resume with another lr: refused (the run's config.json would no longer describe its first steps)
    cfg_before = open(os.path.join(o5, "config.json")).read()
    a = train_args(model, o5, "--max-steps", "10", "--save-every", "2", "--resume", "auto")
    a[a.index("--lr") + 1] = str(float(a[a.index("--lr") + 1]) * 3)
    ok = expect_fail(a, ["lr =", "step-00000008", "same settings"], "resume with another --lr") and ok
    same_cfg = open(os.path.join(o5, "config.json")).read() == cfg_before
    print("config.json unchanged after the refused resume:", same_cfg)
    ok = ok and same_cfg
    # extending a cosine run: allowed, with a warning that the schedule is recomputed
    r = run(train_args(model, o5, "--max-steps", "10", "--save-every", "2", "--resume", "auto"))
    good = r.returncode == 0 and "saved by a run of 8 steps, now asked for 10" in r.stderr and "cosine" in r.stderr
    print(f"extending a cosine run 8 -> 10 steps: warned: {good}")
    ok = ok and good
    # o5 is now finished at 10 steps (final/): resuming it with 9, from its step-8 checkpoint, would
    # replace the final weights with an earlier state: refused, final/ untouched
    fin = os.path.join(o5, "final", "model.safetensors")
    before = os.path.getmtime(fin) if os.path.exists(fin) else None
    a = train_args(model, o5, "--max-steps", "9", "--save-every", "2", "--resume", os.path.join(o5, "checkpoints", "step-00000008"))
    ok = expect_fail(a, ["finished run of 10 steps", "--max-steps 9"], "rewinding a finished run") and ok
    ok = ok and before is not None and os.path.getmtime(fin) == before
    # unwritable output folder: a regular file in the path
    blocker = os.path.join(d, "file")
    open(blocker, "w").write("keep me")
    ok = expect_fail(train_args(model, os.path.join(blocker, "out"), "--max-steps", "2"), ["--out"], "unwritable --out") and ok
    ok = ok and open(blocker).read() == "keep me"
    # existing checkpoints without --resume: refuse (nothing overwritten)
    ok = expect_fail(train_args(model, o5, "--max-steps", "8", "--save-every", "2"), ["--resume auto"], "existing run without --resume") and ok
    # --save-weights ema with the EMA off would save nothing: refused up front with exit 2
    o7 = os.path.join(d, "o7")
    a = train_args(model, o7, "--max-steps", "2", "--save-weights", "ema")
    a[a.index("--ema-decay") + 1] = "0"
    r = run(a)
    good = r.returncode == 2 and "--save-weights ema needs --ema-decay > 0" in r.stderr and not os.path.exists(os.path.join(o7, "final"))
    print(f"--save-weights ema with --ema-decay 0: exit {r.returncode} -> {'ok' if good else 'FAIL'}")
    ok = good and ok
    # --out a folder that is not a run (a model folder, the user's files): refused, nothing written
    for name, fname, text in (("hfdir", "config.json", '{"model_type": "llama"}'), ("notes", "notes.txt", "mine")):
        fo = os.path.join(d, name)
        os.makedirs(fo)
        open(os.path.join(fo, fname), "w").write(text)
        r = run(train_args(model, fo, "--max-steps", "1"))
        good = (r.returncode == 1 and "choose a new or empty --out" in r.stderr and os.listdir(fo) == [fname]
                and open(os.path.join(fo, fname)).read() == text)
        print(f"--out holding {fname}: exit {r.returncode}, untouched: {good} -> {'ok' if good else 'FAIL'}")
        ok = good and ok
    # --warmup-steps beyond the run: a warning (the LR never reaches --lr)
    r = run(train_args(model, os.path.join(d, "o_warm"), "--max-steps", "1", "--eval-every", "0",
                       "--save-weights", "live"))
    good = r.returncode == 0 and "--warmup-steps 2 is more than the run's 1 step:" in r.stderr
    print(f"--warmup-steps 2 with --max-steps 1: warned: {good} -> {'ok' if good else 'FAIL'}")
    ok = good and ok
    a = train_args(model, os.path.join(d, "o_warm2"), "--max-steps", "1", "--eval-every", "0", "--save-weights", "live")
    a[a.index("--lr-schedule") + 1] = "constant"
    r = run(a)
    good = r.returncode == 0 and "--warmup-steps 2 is ignored" in r.stderr and "never reaches" not in r.stderr
    print(f"--warmup-steps with --lr-schedule constant: warned as ignored: {good} -> {'ok' if good else 'FAIL'}")
    ok = good and ok
    a = train_args(model, os.path.join(d, "o_noval"), "--max-steps", "1", "--save-weights", "live")
    a[a.index("--val-fraction") + 1] = "0"
    r = run(a)
    good = r.returncode == 0 and "--eval-every 5 but no rows are held out" in r.stderr
    print(f"--eval-every with --val-fraction 0: warned: {good} -> {'ok' if good else 'FAIL'}")
    ok = good and ok
    # --ema-decay 1: an EMA that never moves: refused up front with exit 2
    a = train_args(model, o7, "--max-steps", "2")
    a[a.index("--ema-decay") + 1] = "1"
    r = run(a)
    good = r.returncode == 2 and "(0, 1)" in r.stderr and not os.path.exists(os.path.join(o7, "final"))
    print(f"--ema-decay 1: exit {r.returncode} -> {'ok' if good else 'FAIL'}")
    ok = good and ok
    # rows whose answer is truncated away train nothing: all of them -> error, some -> dropped with a warning
    ok = expect_fail(train_args(model, os.path.join(d, "o8"), "--max-steps", "2", "--max-seq-len", "8"),
                     ["no row has trained tokens at max_seq_len 8 (--max-seq-len)"], "every row truncated before its answer") and ok
    mixed = os.path.join(d, "mixed.jsonl")
    with open(mixed, "w") as f:
        for i in range(10):
            ins = ("word " * 300) if i in (3, 7) else f"q{i}"
            f.write(json.dumps({"instruction": ins, "response": f"answer {i}"}) + "\n")
    a = train_args(model, os.path.join(d, "o9"), "--max-steps", "2", "--eval-every", "0")
    a[a.index("--data") + 1] = mixed
    a[a.index("--data-format") + 1] = "dolly"
    r = run(a)
    good = r.returncode == 0 and "2 rows have no trained tokens at --max-seq-len 48; dropped" in r.stderr \
        and "safetune train: 8 rows" in r.stderr
    print(f"2 of 10 rows truncated before their answer: exit {r.returncode} -> {'ok' if good else 'FAIL'}")
    if not good:
        print(r.stderr)
    ok = good and ok
    # a failed run leaves no config.json behind (written only once training starts)
    for o in ("o1", "o2", "o3", "o8"):
        left = os.path.exists(os.path.join(d, o, "config.json"))
        print(f"failed run {o}: config.json left behind: {left} -> {'FAIL' if left else 'ok'}")
        ok = ok and not left
    # --out a/b/c creates its parents; a finished run is not overwritten without --overwrite
    nested = os.path.join(d, "a", "b", "c")
    r = run(train_args(model, nested, "--max-steps", "2", "--eval-every", "0", "--save-weights", "live"))
    good = r.returncode == 0 and os.path.exists(os.path.join(nested, "final", "model.safetensors")) \
        and os.path.exists(os.path.join(nested, "config.json"))
    print(f"--out a/b/c: exit {r.returncode} -> {'ok' if good else 'FAIL'}")
    ok = good and ok
    ok = expect_fail(train_args(model, nested, "--max-steps", "2", "--eval-every", "0"),
                     [nested, "finished run", "--overwrite"], "finished run without --overwrite") and ok
    r = run(train_args(model, nested, "--max-steps", "3", "--eval-every", "0", "--overwrite"))
    good = r.returncode == 0 and json.load(open(os.path.join(nested, "config.json")))["max_steps"] == 3
    print(f"--overwrite a finished run: exit {r.returncode} -> {'ok' if good else 'FAIL'}")
    ok = good and ok
    # generate on a training output folder: its final/ (--weights live) or final-ema/ (--weights ema)
    for wsel, sub in (("live", "final"), ("ema", "final-ema")):
        r = run([CLI, "generate", "--model", nested, "--weights", wsel, "--prompt", "hi", "--max-new-tokens", "2"])
        good = os.path.isdir(os.path.join(nested, sub)) and r.returncode == 0 and "completion tokens" in r.stdout
        print(f"generate --weights {wsel} on a training output folder ({sub}/): exit {r.returncode} -> {'ok' if good else 'FAIL'}")
        ok = good and ok
    # a finished run without checkpoints: --resume auto refuses (it used to retrain from step 0)
    fin = os.path.join(nested, "final", "model.safetensors")
    before = os.stat(fin).st_mtime_ns
    ok = expect_fail(train_args(model, nested, "--max-steps", "3", "--eval-every", "0", "--resume", "auto"),
                     [nested, "finished run", "no checkpoint to resume from", "--overwrite"],
                     "--resume auto on a finished run without checkpoints") and ok
    good = os.stat(fin).st_mtime_ns == before
    print(f"finished run untouched: {'ok' if good else 'FAIL'}")
    ok = good and ok
    # --resume with a file / a training output folder; --model with a training output folder
    ok = expect_fail(train_args(model, os.path.join(d, "o_resume"), "--max-steps", "2", "--resume", fin),
                     ["--resume", "not a folder"], "--resume FILE") and ok
    ok = expect_fail(train_args(model, os.path.join(d, "o_resume"), "--max-steps", "2", "--resume", nested),
                     ["--resume", "a training output folder", "--resume auto"], "--resume RUN_FOLDER") and ok
    ok = expect_fail(train_args(nested, os.path.join(d, "o_resume"), "--max-steps", "2"),
                     [f"{nested} is a `safetune train` output folder: pass {nested}/final"], "--model RUN_FOLDER") and ok
    good = not os.path.exists(os.path.join(d, "o_resume"))
    print(f"failed runs left no o_resume folder: {'ok' if good else 'FAIL'}")
    ok = good and ok
    # `info` on a training output folder shows its final/ (the live weights)
    r = run([CLI, "info", nested, "--json"])
    good = r.returncode == 0 and json.loads(r.stdout)["path"] == os.path.join(nested, "final")
    print(f"info on a training output folder: exit {r.returncode} -> {'ok' if good else 'FAIL'}")
    ok = good and ok
    # unknown config key
    cfgf = os.path.join(d, "cfg.json")
    json.dump({"lr": 1e-3, "learning_rate": 1}, open(cfgf, "w"))
    ok = expect_fail(train_args(model, os.path.join(d, "o6"), "--max-steps", "2", "--config", cfgf), ["learning_rate"], "unknown config key") and ok
    print("->", "ok" if ok else "FAIL")
    return ok


def case_split_match(tool):
    """train and eval utility, same --val-fraction and default seed, hold out the same rows:
    ceil(0.05 * n) (HF train_test_split), i.e. 1 of 20 and 5 of 100."""
    if not os.path.exists(ALPACA):
        skip(f"{ALPACA} absent")
    d = fresh("split")
    model = tiny_chat_model(os.path.join(d, "model"))
    rows = json.load(open(ALPACA))
    ok = True
    for n in (20, 100):
        data = os.path.join(d, f"rows{n}.json")
        json.dump(rows[:n], open(data, "w"))
        r = run([CLI, "train", "--model", model, "--data", data, "--data-format", "alpaca", "--out",
                 os.path.join(d, f"t{n}"), "--max-seq-len", "1024", "--batch-size", "2", "--max-steps", "1",
                 "--eval-every", "0", "--val-fraction", "0.05", "--quiet"])
        m = re.search(r"\((\d+) train, (\d+) val\)", r.stderr)
        uo = os.path.join(d, f"u{n}")
        u = run([CLI, "eval", "utility", "--model", model, "--data", data, "--data-format", "alpaca", "--out", uo,
                 "--no-truthfulqa", "--no-mtbench", "--val-fraction", "0.05", "--max-seq-len", "1024", "--quiet"])
        if r.returncode or u.returncode or not m:
            print("FAIL:", r.stderr, u.stderr)
            return False
        h = json.load(open(os.path.join(uo, "summary.json")))["heldout"]
        want = math.ceil(n * 5 / 100)
        good = int(m.group(2)) == want and h["val_rows"] == want and int(m.group(1)) == n - want
        if "val_indices" in h:
            good = good and len(h["val_indices"]) == want
        print(f"{n} rows: train {m.group(1)} train / {m.group(2)} val; utility val_rows {h['val_rows']}; "
              f"expected {want} -> {'ok' if good else 'FAIL'}")
        ok = good and ok
    # rows with no assistant token within --max-seq-len are dropped before the split, by both
    # commands (and --max-rows applies first): train's step-0 val_loss of the start weights is
    # the loss eval utility reports, on the same rows
    common = ["--data", ALPACA, "--data-format", "alpaca", "--max-rows", "64", "--max-seq-len", "48",
              "--val-fraction", "0.1"]
    r = run([CLI, "train", "--model", model, "--out", os.path.join(d, "tdrop"), "--batch-size", "2",
             "--max-steps", "1", "--eval-every", "1", "--save-weights", "live", "--quiet"] + common)
    uo = os.path.join(d, "udrop")
    u = run([CLI, "eval", "utility", "--model", model, "--out", uo, "--no-truthfulqa", "--no-mtbench",
             "--quiet"] + common)
    if r.returncode or u.returncode:
        print("FAIL:", r.stderr, u.stderr)
        return False
    dropped = re.search(r"(\d+) rows? ha(?:s|ve) no trained tokens", r.stderr)
    base = [json.loads(l) for l in open(os.path.join(d, "tdrop", "metrics.jsonl"))][0]
    h = json.load(open(os.path.join(uo, "summary.json")))["heldout"]
    rel = abs(h["loss"] - base["val_loss"]) / abs(base["val_loss"])
    good = (dropped is not None and h["rows_dropped"] == int(dropped.group(1)) > 0 and h["rows"] == 64
            and base["step"] == 0 and rel < 1e-5 and all(0 <= i < 64 for i in h.get("val_indices", [-1]))
            and (h["rows_truncated"] == 0 or f"{h['rows_truncated']} rows cut to --max-seq-len 48" in u.stdout))
    print(f"--max-rows 64 --max-seq-len 48: {h['rows_dropped']} rows dropped by eval utility, "
          f"{dropped.group(1) if dropped else '?'} by train; held-out loss {h['loss']:.6f} vs train's step-0 "
          f"val_loss {base['val_loss']:.6f} (rel {rel:.1e}) -> {'ok' if good else 'FAIL'}")
    ok = good and ok
    # eval utility on the run's own folder takes the run's split settings for the options not given
    uo2 = os.path.join(d, "udrop_run")
    u2 = run([CLI, "eval", "utility", "--model", os.path.join(d, "tdrop"), "--data", ALPACA, "--data-format", "alpaca",
              "--out", uo2, "--no-truthfulqa", "--no-mtbench", "--quiet"])
    h2 = json.load(open(os.path.join(uo2, "summary.json")))["heldout"] if u2.returncode == 0 else {}
    good = (u2.returncode == 0 and "held-out split as the run's" in u2.stderr and h2.get("max_seq_len") == 48
            and h2.get("val_indices") == h.get("val_indices") and h2.get("rows") == 64)
    print(f"eval utility --model RUN_DIR: the run's split ({h2.get('val_rows')} rows, max_seq_len "
          f"{h2.get('max_seq_len')}) -> {'ok' if good else 'FAIL: ' + u2.stderr}")
    ok = good and ok
    print("->", "ok" if ok else "FAIL")
    return ok


def case_real_run(tool):
    if not os.path.exists(SMOL) or not os.path.exists(ALPACA):
        skip("SmolLM2 GGUF or Alpaca data absent")
    d = fresh("real_run")
    out = os.path.join(d, "run")
    args = [CLI, "train", "--model", SMOL, "--data", ALPACA, "--data-format", "alpaca", "--out", out,
            "--max-rows", "1000", "--max-seq-len", "128", "--batch-size", "4", "--grad-accum", "1",
            "--max-steps", "20", "--lr", "2e-4", "--warmup-steps", "2", "--lr-schedule", "cosine",
            "--ema-decay", "0.9", "--val-fraction", "0.016", "--eval-every", "10", "--save-weights", "live", "--quiet"]
    t0 = time.time()
    must(args)
    el = time.time() - t0
    recs = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"))]
    tr = [r["loss"] for r in recs if r["step"] > 0]
    val = [(r["step"], r["val_loss"]) for r in recs if "val_loss" in r]
    first, last = np.mean(tr[:7]), np.mean(tr[-7:])
    print(f"real run {el:.0f} s: train loss mean first 7 steps {first:.4f} -> last 7 {last:.4f}; val {val}")
    ok = last < first and val[-1][1] < val[0][1]
    # the saved folder: safetensors + tokenizers load, logits match the PyTorch reference
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer
    fin = os.path.join(out, "final")
    w = load_file(os.path.join(fin, "model.safetensors"))
    tk = Tokenizer.from_file(os.path.join(fin, "tokenizer.json"))
    print(f"final/: {len(w)} tensors via safetensors; tokenizers encodes 'Hello world' -> {tk.encode('Hello world').ids}")
    lg = os.path.join(d, "logits")
    os.makedirs(lg)
    must([tool, "logits", fin, lg])
    ok = compare_logits(lg, fin, 1e-4, "final/ loaded in safetune vs llama_ref.from_hf") and ok
    print("->", "ok" if ok else "FAIL")
    return ok


def main():
    case, tool = sys.argv[1], sys.argv[2]
    fn = {"epoch_windows": lambda: case_epoch_windows(tool), "steps_gqa_untied": lambda: case_steps(tool, False), "steps_tied": lambda: case_steps(tool, True),
          "accum_bf16": lambda: case_accum_bf16(tool), "smollm_step": lambda: case_smollm_step(tool),
          "export_tiny": lambda: case_export_tiny(tool), "export_smollm": lambda: case_export_smollm(tool),
          "resume_kill": lambda: case_resume_kill(tool), "bad_input": lambda: case_bad_input(tool),
          "split_match": lambda: case_split_match(tool), "l2sp_coupled": lambda: case_l2sp_coupled(tool),
          "real_run": lambda: case_real_run(tool)}[case]
    scratch.finish(fn())


if __name__ == "__main__":
    main()
