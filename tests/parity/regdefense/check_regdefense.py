#!/usr/bin/env python3
"""Constrained SFT, KL to θ0 and EWC (DEFENSES.md §4, §8) against an independent PyTorch reference
(tests/reference/llama_ref.py, float64, autograd), one case per ctest test.

  csft_grad   loss, trained objective and every gradient tensor of one step on a perturbed tiny
              model (θ ≠ θ0) vs autograd of −(1/N)Σ w_t log p_θ with w_t = max(1e-3, 2(1−σ(β_t Δ_t)))
              detached (rel <= 1e-4); the θ0 cache equals a fresh θ0 forward; at θ0 loss and
              gradient equal plain CE (rel <= 1e-6)
  kl_grad     the KL term λ·(1/N)Σ_r KL(p_θ0‖p_θ) over the vocabulary axis and every gradient
              tensor, with CSFT on too (rel <= 1e-4); at θ0 the term is exactly 0 and the gradient
              is plain CE's; bf16 matmuls within 3e-2 of fp32
  ewc         F = mean over alignment rows of the squared gradient of each row's mean NLL at θ0
              (rel <= 1e-4), unchanged when the set is listed twice; the penalty (λ/2)ΣF(θ−θ0)²
              and the step's gradient (task + λF(θ−θ0)) (rel <= 1e-4)
  train10     10 AdamW steps of CSFT + KL + EWC at once with two EMA decays vs a PyTorch replay:
              losses, grad norms, final live and both EMA weights (rel <= 1e-4)
  resume      the same run saved at step 4 and resumed in a fresh trainer: steps 5..10, live and
              EMA weights bit-identical (cache and Fisher read from the checkpoint)
  cli         `safetune train --csft-beta --kl-lambda --ema-decay 0.9,0.5` SIGKILLed after a
              checkpoint, then --resume auto: losses, both EMA drifts and final weights
              bit-identical; config.json carries the keys; bad settings refused naming the key
Usage: check_regdefense.py CASE DEFENSE_TOOL     (exit 77 = skipped: input absent)"""
import json
import math
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.environ.get("SAFETUNE_REPO", os.path.abspath(os.path.join(HERE, "../../..")))
sys.path.insert(0, os.path.join(REPO, "tests", "reference"))
sys.path.insert(0, os.path.join(REPO, "tests", "parity", "trainer"))
import llama_ref  # noqa: E402
import check_trainer as ct  # noqa: E402  (helpers: fresh, must, read_batches, hf_lambda, tiny chat model)

torch.set_num_threads(os.cpu_count() or 1)
F64 = torch.float64


def tiny(d, seed=3):
    mdir = os.path.join(d, "model")
    llama_ref.write_tiny_random(mdir, seed=seed, tie_word_embeddings=False, num_attention_heads=4,
                                num_key_value_heads=2)
    return mdir


def layout(out):
    return [(l.split()[0], int(l.split()[1]), int(l.split()[2])) for l in open(os.path.join(out, "layout.txt"))]


def flat_to(model, out, name, lay):
    a = np.fromfile(os.path.join(out, name), np.float32)
    for n, o, k in lay:
        model.params[n] = torch.from_numpy(a[o:o + k].copy()).to(F64).reshape(model.params[n].shape)


def to_flat(d, lay):
    return torch.cat([d[n].detach().reshape(-1).to(F64) for n, _, _ in lay])


def steps_of(out):
    return np.loadtxt(os.path.join(out, "steps.txt"), ndmin=2)


def positions(tgt):
    """response position t (1-based) of each [B, T] target: 1 + the trained targets just before it."""
    pos = np.zeros(tgt.shape, np.int64)
    for b in range(tgt.shape[0]):
        run = 0
        for k in range(tgt.shape[1]):
            run = run + 1 if tgt[b, k] >= 0 else 0
            pos[b, k] = run
    return pos


def beta_t(beta, f1, f, L, t):
    return np.where(t <= 1, beta * f1, np.where(t <= L, beta * f, beta))


def objective(model, ref0, inp, tgt, msk, norm, o):
    """(plain CE sum, CSFT objective, KL term) of one micro-batch as torch scalars; the trained
    loss is csft (or CE) + kl."""
    logits = model.forward(torch.from_numpy(inp))
    t = torch.from_numpy(tgt).long()
    m = torch.from_numpy(msk).to(F64) * (t >= 0).to(F64)
    lsm = torch.log_softmax(logits, -1)
    lp = lsm.gather(-1, t.clamp(min=0)[..., None])[..., 0]
    ce = -(lp * m).sum() / norm
    csft = torch.zeros((), dtype=F64)
    kl = torch.zeros((), dtype=F64)
    beta = float(o.get("csft_beta", 0))
    lam = float(o.get("kl_lambda", 0))
    if beta > 0 or lam > 0:
        with torch.no_grad():
            lsm0 = torch.log_softmax(ref0.forward(torch.from_numpy(inp)), -1)
    if beta > 0:
        lp0 = lsm0.gather(-1, t.clamp(min=0)[..., None])[..., 0]
        bt = torch.from_numpy(beta_t(beta, float(o.get("csft_first_factor", 5)), float(o.get("csft_factor", 20)),
                                     int(o.get("csft_prefix", 5)), positions(tgt))).to(F64)
        w = torch.clamp(2.0 * (1.0 - torch.sigmoid(bt * (lp.detach() - lp0))), min=1e-3)
        csft = -(w * lp * m).sum() / norm
    if lam > 0:
        klr = (lsm0.exp() * (lsm0 - lsm)).sum(-1)  # KL(p0 ‖ p) over the vocabulary axis
        kl = lam * (klr * m).sum() / norm
    return ce, csft, kl


def run_tool(tool, mdir, out, opts):
    ct.must([tool, "train", mdir, out] + [f"{k}={v}" for k, v in opts.items()])


def grads_check(tool, name, opts, what):
    """One step on a perturbed tiny model; the C gradient before clipping vs autograd."""
    d = ct.fresh("regdef_" + name)
    mdir = tiny(d)
    opts = dict(dict(max_steps=1, max_grad_norm=0, perturb=0.05, save_at=1), **opts)
    run_tool(tool, mdir, d, opts)
    lay = layout(d)
    model = llama_ref.load(mdir, F64)
    ref0 = llama_ref.load(mdir, F64)
    theta0 = {n: p.clone() for n, p in ref0.params.items()}
    flat_to(model, d, "start.bin", lay)
    params = model.enable_grad()
    ours = steps_of(d)
    batches = ct.read_batches(os.path.join(d, "batches.bin"), 1, ours[:, 4])
    norm = sum(float(m.sum()) for _, _, m in batches[0])
    ce_t = cs_t = kl_t = 0.0
    for inp, tgt, msk in batches[0]:
        ce, cs, kl = objective(model, ref0, inp, tgt, msk, norm, opts)
        (( cs if float(opts.get("csft_beta", 0)) > 0 else ce) + kl).backward()
        ce_t, cs_t, kl_t = ce_t + float(ce), cs_t + float(cs), kl_t + float(kl)
    pen = 0.0
    lam = float(opts.get("ewc_lambda", 0))
    if lam > 0:
        fisher = fisher_ref(mdir, d, opts, lay)
        fl = torch.from_numpy(np.fromfile(os.path.join(d, "fisher.bin"), np.float32)).to(F64)
        e = rel(fl, fisher)
        print(f"Fisher: mean C {float(fl.mean()):.6g} torch {float(fisher.mean()):.6g}, rel {e:.2e} (tol 1e-4)")
        ok_f = e <= 1e-4
        th, t0 = to_flat(params, lay), to_flat(theta0, lay)
        pen_t = 0.5 * lam * float((fisher * (th - t0) ** 2).sum())
        g_pen = lam * fisher * (th - t0)
        pen = pen_t
    else:
        ok_f = True
        g_pen = 0
    g_ref = to_flat({n: p.grad for n, p in params.items()}, lay) + g_pen
    g_c = torch.from_numpy(np.fromfile(os.path.join(d, "grad1.bin"), np.float32)).to(F64)
    worst, worst_n = 0.0, ""
    for n, o, k in lay:
        e = rel(g_c[o:o + k], g_ref[o:o + k])
        if e > worst:
            worst, worst_n = e, n
    c_loss, c_pen, c_cs, c_kl = ours[0][1], ours[0][6], ours[0][7], ours[0][8]
    vals = [("loss (plain CE)", c_loss, ce_t)]
    if float(opts.get("csft_beta", 0)) > 0:
        vals.append(("csft_loss", c_cs, cs_t))
    if float(opts.get("kl_lambda", 0)) > 0:
        vals.append(("kl", c_kl, kl_t))
    if lam > 0:
        vals.append(("penalty", c_pen, pen))
    ok = ok_f and worst <= 1e-4
    for nm, a, b in vals:
        e = abs(a - b) / max(abs(b), 1e-30)
        print(f"{what}: {nm} C {a:.9g} torch {b:.9g} rel {e:.2e}")
        ok = ok and e <= 1e-4
    print(f"{what}: worst gradient tensor {worst_n} rel {worst:.2e} over {len(lay)} tensors (tol 1e-4)")
    return ok, d, model, ref0, batches, lay


def rel(a, b):
    return float((a - b).norm() / max(float(b.norm()), 1e-30))


def at_theta0(tool, name, opts, exact_kl=False):
    """perturb 0: the defense at θ0 against plain fine-tuning (the same batch)."""
    d = ct.fresh("regdef_" + name + "_t0")
    mdir = tiny(d)
    base = dict(max_steps=1, max_grad_norm=0)
    pd, od = os.path.join(d, "plain"), os.path.join(d, "def")
    os.makedirs(pd)
    os.makedirs(od)
    run_tool(tool, mdir, pd, base)
    run_tool(tool, mdir, od, dict(base, **opts))
    gp = torch.from_numpy(np.fromfile(os.path.join(pd, "grad1.bin"), np.float32)).to(F64)
    gd = torch.from_numpy(np.fromfile(os.path.join(od, "grad1.bin"), np.float32)).to(F64)
    sp, sd = steps_of(pd)[0], steps_of(od)[0]
    eg, el = rel(gd, gp), abs(sd[1] - sp[1]) / abs(sp[1])
    ok = eg <= 1e-6 and el <= 1e-6
    msg = f"at θ0: gradient rel {eg:.2e}, loss rel {el:.2e} vs plain fine-tuning (tol 1e-6)"
    if "csft_beta" in opts:
        ec = abs(sd[7] - sp[1]) / abs(sp[1])
        ok = ok and ec <= 1e-6
        msg += f", CSFT objective vs plain CE rel {ec:.2e}"
    if exact_kl:
        ok = ok and sd[8] == 0.0
        msg += f", KL term {sd[8]!r} (must be exactly 0)"
    print(msg)
    return ok


def case_csft_grad(tool):
    o = dict(csft_beta=0.3)
    ok, d, model, ref0, batches, lay = grads_check(tool, "csft", o, "CSFT β 0.3")
    # the cache: θ0's log p of the trained targets of the rows trained on so far (filled when a row
    # is first trained on), at the target's index in the concatenated rows, = a fresh θ0 forward of
    # that row alone; NaN at every other index (untrained positions and rows not reached yet)
    logp0 = np.fromfile(os.path.join(d, "logp0.bin"), np.float32)
    T = int(o.get("max_seq_len", 24))
    want = np.full(logp0.shape, np.nan)
    off = 0
    with torch.no_grad():
        for ids, m in read_align(d, "data.bin"):
            x = ids[:T]
            lsm0 = torch.log_softmax(ref0.forward(torch.from_numpy(x[None].astype(np.int64)))[0], -1)
            for k in range(len(x) - 1):
                if m[k + 1]:
                    want[off + k + 1] = float(lsm0[k, x[k + 1]])
            off += len(ids)
    set_c, set_w = np.isfinite(logp0), np.isfinite(want)
    worst = float(np.max(np.abs(logp0[set_c] - want[set_c]) / np.maximum(1.0, np.abs(want[set_c])))) if set_c.any() else 1.0
    # whole rows: a row is cached at all its trained targets or at none
    whole, o2 = True, 0
    for ids, m in read_align(d, "data.bin"):
        rc, rw = set_c[o2:o2 + len(ids)], set_w[o2:o2 + len(ids)]
        whole = whole and (not rc.any() or bool((rc == rw).all()))
        o2 += len(ids)
    ok_c = off == len(logp0) and bool((set_c <= set_w).all()) and whole and set_c.sum() > 0 and worst <= 1e-4
    print(f"cache: {int(set_c.sum())} entries of the {int(set_w.sum())} trained targets (the rows trained on, each whole, "
          f"none elsewhere): {ok_c}; vs a fresh θ0 forward of each row: worst rel {worst:.2e} (tol 1e-4)")
    ok0 = at_theta0(tool, "csft", o)
    print("->", "ok" if ok and ok_c and ok0 else "FAIL")
    return ok and ok_c and ok0


def case_kl_grad(tool):
    ok, d, _, _, _, _ = grads_check(tool, "kl", dict(kl_lambda=0.5, csft_beta=0.3), "KL λ 0.5 + CSFT β 0.3")
    # bf16 matmuls: the head term's fp32 d(logits) rounded to bf16 for the lm_head backward
    b16 = os.path.join(d, "bf16")
    os.makedirs(b16)
    mdir = os.path.join(d, "model")
    run_tool(tool, mdir, b16, dict(max_steps=1, max_grad_norm=0, perturb=0.05, kl_lambda=0.5, csft_beta=0.3,
                                   precision="bf16"))
    g32 = torch.from_numpy(np.fromfile(os.path.join(d, "grad1.bin"), np.float32)).to(F64)
    g16 = torch.from_numpy(np.fromfile(os.path.join(b16, "grad1.bin"), np.float32)).to(F64)
    k32, k16 = steps_of(d)[0][8], steps_of(b16)[0][8]
    eg, ek = rel(g16, g32), abs(k16 - k32) / k32
    print(f"bf16 matmuls: gradient rel {eg:.2e}, KL term rel {ek:.2e} vs fp32 (tol 3e-2)")
    ok = ok and eg <= 3e-2 and ek <= 3e-2
    ok0 = at_theta0(tool, "kl", dict(kl_lambda=0.5), exact_kl=True)
    print("->", "ok" if ok and ok0 else "FAIL")
    return ok and ok0


def read_align(out, name="align.bin"):
    raw = open(os.path.join(out, name), "rb").read()
    n = int(np.frombuffer(raw, np.int32, 1, 0)[0])
    off, rows = 4, []
    for _ in range(n):
        ln = int(np.frombuffer(raw, np.int32, 1, off)[0])
        off += 4
        ids = np.frombuffer(raw, np.int32, ln, off).copy()
        off += 4 * ln
        m = np.frombuffer(raw, np.uint8, ln, off).copy()
        off += ln
        rows.append((ids, m))
    return rows


def fisher_ref(mdir, out, opts, lay):
    """mean over the alignment rows of (∂ℓ_n/∂θ)², ℓ_n the mean NLL of row n's answer (batch of 1),
    at θ0; rows collated as the trainer does (truncated to max_seq_len, target t = ids[t+1] where
    the mask of t+1 is set)."""
    T = int(opts.get("max_seq_len", 24))
    ref = llama_ref.load(mdir, F64)
    params = ref.enable_grad()
    acc, used = None, 0
    for ids, m in read_align(out):
        ids, m = ids[:T], m[:T]
        tgt = np.full(len(ids), -1, np.int64)
        for k in range(len(ids) - 1):
            if m[k + 1]:
                tgt[k] = ids[k + 1]
        n = int((tgt >= 0).sum())
        if n == 0:
            continue
        for p in params.values():
            p.grad = None
        l = ref.loss(torch.from_numpy(ids[None].astype(np.int64)), torch.from_numpy(tgt[None]),
                     torch.ones(1, len(ids), dtype=F64), float(n))
        l.backward()
        g = to_flat({k: p.grad for k, p in params.items()}, lay) ** 2
        acc = g if acc is None else acc + g
        used += 1
    return acc / used


def case_ewc(tool):
    o = dict(ewc_lambda=50, align_rows=12)
    ok = grads_check(tool, "ewc", o, "EWC λ 50")[0]
    # the alignment set listed twice: the same Fisher (normalised by the count)
    d = ct.fresh("regdef_ewc_dup")
    mdir = tiny(d)
    for sub, dup in (("once", 0), ("twice", 1)):
        os.makedirs(os.path.join(d, sub))
        run_tool(tool, mdir, os.path.join(d, sub), dict(max_steps=1, save_at=1, ewc_lambda=50, align_rows=12, dup=dup))
    f1 = torch.from_numpy(np.fromfile(os.path.join(d, "once", "fisher.bin"), np.float32)).to(F64)
    f2 = torch.from_numpy(np.fromfile(os.path.join(d, "twice", "fisher.bin"), np.float32)).to(F64)
    e = rel(f2, f1)
    print(f"alignment set listed twice: Fisher rel {e:.2e} (tol 1e-6)")
    ok = ok and e <= 1e-6 and float(f1.abs().sum()) > 0
    print("->", "ok" if ok else "FAIL")
    return ok


TRAIN10 = dict(csft_beta=0.1, kl_lambda=0.1, ewc_lambda=20, align_rows=8, ema_decay="0.9,0.5")


def case_train10(tool):
    d = ct.fresh("regdef_train10")
    mdir = tiny(d)
    opts = dict(TRAIN10)
    run_tool(tool, mdir, d, dict(opts, save_at=1))
    lay = layout(d)
    ours = steps_of(d)
    steps = len(ours)
    batches = ct.read_batches(os.path.join(d, "batches.bin"), steps, ours[:, 4])
    model = llama_ref.load(mdir, F64)
    ref0 = llama_ref.load(mdir, F64)
    theta0 = {n: p.clone() for n, p in ref0.params.items()}
    params = model.enable_grad()
    fisher = fisher_ref(mdir, d, opts, lay)
    fd = {n: fisher[o:o + k].reshape(params[n].shape) for n, o, k in lay}
    nodecay = lambda n: n.endswith("norm.weight") or n.endswith(".bias")
    groups = [{"params": [p for n, p in params.items() if not nodecay(n)], "weight_decay": 0.1},
              {"params": [p for n, p in params.items() if nodecay(n)], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=3e-3, betas=(0.9, 0.95), eps=1e-8)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, ct.hf_lambda("cosine", 3, steps))
    decays = [0.9, 0.5]
    emas = [{n: p.detach().clone() for n, p in params.items()} for _ in decays]
    worst = 0.0
    for s in range(steps):
        opt.zero_grad()
        norm = sum(float(m.sum()) for _, _, m in batches[s])
        vals = np.zeros(4)
        for inp, tgt, msk in batches[s]:
            ce, cs, kl = objective(model, ref0, inp, tgt, msk, norm, opts)
            (cs + kl).backward()
            vals[:3] += [float(ce), float(cs), float(kl)]
        pen = sum(0.5 * 20 * (fd[n] * (p - theta0[n]) ** 2).sum() for n, p in params.items())
        pen.backward()
        vals[3] = float(pen)
        gn = float(torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0))
        opt.step()
        sched.step()
        with torch.no_grad():
            for e, b in zip(emas, decays):
                for n, p in params.items():
                    e[n].mul_(b).add_(p.detach(), alpha=1.0 - b)
        c = ours[s]
        errs = [abs(c[1] - vals[0]) / abs(vals[0]), abs(c[7] - vals[1]) / abs(vals[1]),
                abs(c[8] - vals[2]) / max(abs(vals[2]), 1e-30) if s > 0 else abs(c[8] - vals[2]),
                abs(c[6] - vals[3]) / max(abs(vals[3]), 1e-30) if s > 0 else abs(c[6] - vals[3]),
                abs(c[3] - gn) / gn]
        worst = max(worst, max(errs))
        print(f"step {s + 1}: loss C {c[1]:.7f} torch {vals[0]:.7f}  csft {c[7]:.7f}/{vals[1]:.7f}  "
              f"kl {c[8]:.4g}/{vals[2]:.4g}  penalty {c[6]:.4g}/{vals[3]:.4g}  grad_norm {c[3]:.6f}/{gn:.6f}")
    T0 = to_flat(theta0, lay)
    live = torch.from_numpy(np.fromfile(os.path.join(d, "live.bin"), np.float32)).to(F64)
    rl = rel(live - T0, to_flat(params, lay) - T0)
    re = [rel(torch.from_numpy(np.fromfile(os.path.join(d, f), np.float32)).to(F64) - T0, to_flat(e, lay) - T0)
          for f, e in (("ema.bin", emas[0]), ("ema1.bin", emas[1]))]
    print(f"max rel error of loss / csft / kl / penalty / grad norm over {steps} steps: {worst:.2e}; "
          f"update θ−θ0 rel {rl:.2e}, EMA 0.9 {re[0]:.2e}, EMA 0.5 {re[1]:.2e} (tol 1e-4)")
    ok = worst <= 1e-4 and rl <= 1e-4 and max(re) <= 1e-4
    print("->", "ok" if ok else "FAIL")
    return ok


def case_resume(tool):
    d = ct.fresh("regdef_resume")
    mdir = tiny(d)
    full, part = os.path.join(d, "full"), os.path.join(d, "part")
    os.makedirs(full)
    os.makedirs(part)
    run_tool(tool, mdir, full, dict(TRAIN10, save_at=4))
    ct.must([tool, "resume", mdir, part, os.path.join(full, "ck")] + [f"{k}={v}" for k, v in TRAIN10.items()])
    a = open(os.path.join(full, "steps.txt")).read().splitlines()[4:]
    b = open(os.path.join(part, "steps.txt")).read().splitlines()
    same = a == b and len(b) == 6
    for f in ("live.bin", "ema.bin", "ema1.bin"):
        same = same and open(os.path.join(full, f), "rb").read() == open(os.path.join(part, f), "rb").read()
    # strength 0 (the schedule factors changed, every strength 0) is plain fine-tuning bit for bit
    z0, z1 = os.path.join(d, "plain"), os.path.join(d, "zero")
    os.makedirs(z0)
    os.makedirs(z1)
    run_tool(tool, mdir, z0, dict(max_steps=4))
    run_tool(tool, mdir, z1, dict(max_steps=4, csft_beta=0, csft_factor=7, csft_prefix=2, kl_lambda=0, ewc_lambda=0,
                                  align_rows=8))
    zero = all(open(os.path.join(z0, f), "rb").read() == open(os.path.join(z1, f), "rb").read()
               for f in ("steps.txt", "live.bin", "ema.bin"))
    print(f"csft_beta = kl_lambda = ewc_lambda = 0: losses, live and EMA weights bit-identical to plain fine-tuning: {zero}")
    same = same and zero
    print(f"CSFT + KL + EWC, EMA 0.9 and 0.5, saved at step 4 and resumed in a fresh trainer: steps 5..10 "
          f"(loss, grad norm, penalty, csft, kl) and live / both EMA weights bit-identical: {same}")
    print("->", "ok" if same else "FAIL")
    return same


def expect_refused(args, key, what):
    r = ct.run(args)
    ok = r.returncode == 2 and key in r.stderr
    print(f"{what}: exit {r.returncode}, names {key}: {ok}" + ("" if ok else f"\n{r.stderr}"))
    return ok


def case_cli(tool):
    if not os.path.exists(ct.ALPACA):
        ct.skip(f"{ct.ALPACA} absent")
    d = ct.fresh("regdef_cli")
    model = ct.tiny_chat_model(os.path.join(d, "model"))
    targs = lambda out, *a: ct.train_args(model, out, "--ema-decay", "0.9,0.5", "--csft-beta", "0.1",
                                          "--kl-lambda", "0.1", *a)
    steps = "12"
    ref_out = os.path.join(d, "ref")
    ct.must(targs(ref_out, "--max-steps", steps, "--save-every", "3"))
    ref, ref_ema = ct.losses(ref_out), ct.ema_fields(ref_out)
    cfg = json.load(open(os.path.join(ref_out, "config.json")))
    keys = all(k in cfg for k in ("csft_beta", "csft_first_factor", "csft_factor", "csft_prefix", "kl_lambda",
                                  "ewc_lambda"))
    rec = [json.loads(l) for l in open(os.path.join(ref_out, "metrics.jsonl"))]
    fields = all("csft_loss" in r and "kl" in r for r in rec if r["step"] > 0) and "defense_setup_s" in rec[1]
    ok = keys and fields and cfg["csft_beta"] == 0.1 and cfg["kl_lambda"] == 0.1
    print(f"config.json has the defense keys: {keys}; metrics carry csft_loss, kl and the one-off defense_setup_s: "
          f"{fields}")
    out = os.path.join(d, "killed")
    target = random.Random(int(os.environ.get("SAFETUNE_TEST_SEED", time.time()))).choice([3, 6, 9])
    p = subprocess.Popen(targs(out, "--max-steps", steps, "--save-every", "3"), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    ck = os.path.join(out, "checkpoints", f"step-{target:08d}")
    t0 = time.time()
    while not os.path.exists(ck) and p.poll() is None and time.time() - t0 < 120:
        time.sleep(0.002)
    p.send_signal(signal.SIGKILL)
    p.wait()
    r = ct.run(targs(out, "--max-steps", steps, "--save-every", "3", "--resume", "auto"))
    same = r.returncode == 0 and ct.losses(out) == ref and ct.ema_fields(out) == ref_ema and ct.same_final(out, ref_out)
    print(f"SIGKILL after checkpoint step {target}, --resume auto: losses, both EMA drifts, final/, final-ema/, "
          f"final-ema-0.5/ bit-identical: {same}")
    ok = ok and same
    # bad settings: refused before training (usage error 2), the message names the key
    bad = os.path.join(d, "bad")
    base = lambda *a: ct.train_args(model, bad, "--max-steps", "2", *a)
    ok = expect_refused(base("--csft-beta", "-0.1"), "csft_beta", "--csft-beta -0.1") and ok
    ok = expect_refused(base("--kl-lambda", "2e6"), "kl_lambda", "--kl-lambda 2e6") and ok
    ok = expect_refused(base("--csft-prefix", "0"), "csft_prefix", "--csft-prefix 0") and ok
    ok = expect_refused(base("--ewc-lambda", "1"), "ewc_lambda", "--ewc-lambda without the alignment set") and ok
    ok = expect_refused(base("--ewc-lambda", "1", "--l2sp-alpha", "1"), "ewc_lambda",
                        "--ewc-lambda with --l2sp-alpha (mutually exclusive)") and ok
    ok = expect_refused(base("--kl-lambda", "0.1", "--finetune", "lora"), "kl_lambda", "--kl-lambda with LoRA") and ok
    left = os.path.exists(bad)
    print(f"nothing written by the refused runs: {not left}")
    ok = ok and not left
    print("->", "ok" if ok else "FAIL")
    return ok


def main():
    case, tool = sys.argv[1], sys.argv[2]
    cases = {"csft_grad": case_csft_grad, "kl_grad": case_kl_grad, "ewc": case_ewc, "train10": case_train10,
             "resume": case_resume, "cli": case_cli}
    sys.exit(0 if cases[case](tool) else 1)


if __name__ == "__main__":
    main()
