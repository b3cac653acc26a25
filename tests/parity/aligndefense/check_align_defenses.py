#!/usr/bin/env python3
"""check_align_defenses.py - Lisa and SafeGrad (DEFENSES.md §6, §7) against independent checks.

Cases (one ctest test each):
  safegrad_parity  SafeGrad steps of the trainer (safegrad_tool) replayed in PyTorch float64
                   (tests/reference/llama_ref.py): the task loss, L_a = KL(p_θ0 ‖ p_θ) over the
                   vocabulary at response positions ÷ |R(A)|, d = ⟨g_u, g_a⟩, the projection and the
                   whole gradient g = g_u' + ρ·g_a before clipping, at rel <= 1e-4, on a tiny model
                   whose θ moved from θ_0; at least one step must have the projection active.
  cli              `safetune train --lisa on / --safegrad on` on a tiny model aligned by
                   `safetune align`: Lisa's phases in metrics.jsonl (T = 25, K1 = 1, K2 = 9: alignment
                   steps 1, 11, 21), the keys in config.json, SafeGrad's fields, zero strengths = plain
                   fine-tuning bit for bit, bad settings refused before training naming the key.
  lisa_resume      Lisa with EMA decays 0.9 and 0.5 killed (SIGKILL) mid-run and resumed: losses,
                   both EMA drifts and final/, final-ema/, final-ema-0.5/ bit-identical.
Usage: check_align_defenses.py CASE SAFEGRAD_TOOL   (exit 77 = skipped: input absent)"""
import json
import os
import random
import re
import shutil
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
import check_trainer  # noqa: E402  (tiny_chat_model, train_args, losses, ema_fields, same_final)

TMP = os.environ.get("SAFETUNE_TEST_TMP", "/tmp")
CLI = check_trainer.CLI
DATA = check_trainer.DATA_DIR
FAILS = []


def check(cond, what):
    print("%-4s %s" % ("ok" if cond else "FAIL", what))
    if not cond:
        FAILS.append(what)


def fresh(name):
    d = os.path.join(TMP, "aligndefense_" + name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return d


def run(args, **kw):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=900, **kw)


def read_batches(path):
    raw = open(path, "rb").read()
    off, out = 0, []
    while off < len(raw):
        B, T = np.frombuffer(raw, np.int32, 2, off)
        off += 8
        n = int(B) * int(T)
        inp = np.frombuffer(raw, np.int32, n, off).reshape(B, T); off += 4 * n
        tgt = np.frombuffer(raw, np.int32, n, off).reshape(B, T); off += 4 * n
        msk = np.frombuffer(raw, np.float32, n, off).reshape(B, T); off += 4 * n
        out.append((torch.from_numpy(inp.astype(np.int64)), torch.from_numpy(tgt.astype(np.int64)),
                    torch.from_numpy(msk.astype(np.float64))))
    return out


def rel(a, b):
    return float((a - b).norm() / max(float(b.norm()), 1e-300))


def case_safegrad_parity(tool):
    d = fresh("safegrad")
    mdir = os.path.join(d, "model")
    llama_ref.write_tiny_random(mdir, seed=4, tie_word_embeddings=False, num_attention_heads=4, num_key_value_heads=2)
    rho, steps = 1.0, 8
    r = run([tool, mdir, d, f"steps={steps}", "lr=1e-2", f"rho={rho}", "project=1"])
    if r.returncode != 0:
        print(r.stdout, r.stderr)
        return False
    layout = [(l.split()[0], int(l.split()[1]), int(l.split()[2])) for l in open(os.path.join(d, "layout.txt"))]
    ours = np.loadtxt(os.path.join(d, "steps.txt"), ndmin=2)
    ref = llama_ref.load(mdir, dtype=torch.float64)
    flat = lambda name: np.fromfile(os.path.join(d, name), np.float32)
    th0 = flat("theta0.bin")

    def set_params(m, vec):
        for n, o, k in layout:
            m.params[n] = torch.from_numpy(vec[o:o + k].astype(np.float64)).reshape(m.params[n].shape)

    ref0 = llama_ref.load(mdir, dtype=torch.float64)
    set_params(ref0, th0)
    names = [n for n, _, _ in layout]
    cat = lambda grads: torch.cat([grads[n].reshape(-1) for n in names])
    worst, projected = 0.0, 0
    for k in range(steps):
        set_params(ref, flat(f"theta-{k}.bin"))
        params = ref.enable_grad()
        bs = read_batches(os.path.join(d, f"batches-{k}.bin"))
        task, (ai, at, am) = bs[:-1], bs[-1]
        norm = sum(float(m.sum()) for _, _, m in task)
        loss = sum(ref.loss(i, t, m, norm) for i, t, m in task)
        gu = cat(dict(zip(names, torch.autograd.grad(loss, [params[n] for n in names]))))
        rows = at.reshape(-1) >= 0
        with torch.no_grad():
            lp0 = torch.log_softmax(ref0.forward(ai), -1).reshape(-1, ref.cfg["vocab_size"])[rows]
        lp = torch.log_softmax(ref.forward(ai), -1).reshape(-1, ref.cfg["vocab_size"])[rows]
        R = int(rows.sum())
        la = torch.nn.functional.kl_div(lp, lp0, log_target=True, reduction="sum") / R  # KL(p_θ0 ‖ p_θ) / |R|
        ga = cat(dict(zip(names, torch.autograd.grad(la, [params[n] for n in names]))))
        dot = float(gu @ ga)
        na = float(ga @ ga)
        gup = gu - (dot / na) * ga if (dot < 0 and na > 1e-9) else gu
        g = gup + rho * ga
        cg = torch.from_numpy(flat(f"g-{k}.bin").astype(np.float64))
        cgu = torch.from_numpy(flat(f"gu-{k}.bin").astype(np.float64))
        c_loss, c_la, c_dot, c_coef = ours[k][1:5]
        if k == 0:  # at θ_0: L_a = 0 and g_a = 0 exactly, g = g_u
            ok0 = (c_la == 0.0 and c_dot == 0.0 and bool(torch.equal(cg, cgu)) and abs(float(la)) <= 1e-15 and
                   float(ga.norm()) <= 1e-12 * float(gu.norm()))
            check(ok0, f"step 1 at θ_0: L_a = 0 and g_a = 0 exactly in C (g = g_u bit for bit); torch L_a {float(la):.1e}, "
                  f"‖g_a‖ {float(ga.norm()):.1e} (float64 rounding)")
            e = max(abs(c_loss - float(loss)) / float(loss), rel(cg, g))
        else:
            e = max(abs(c_loss - float(loss)) / float(loss), abs(c_la - float(la)) / float(la),
                    abs(c_dot - dot) / abs(dot), rel(cg, g), rel(cgu, gup), rel(cg - cgu, rho * ga))
            same_branch = (c_coef != 0) == (dot < 0)
            check(same_branch, f"step {k + 1}: projection {'on' if dot < 0 else 'off'} in both (coef C {c_coef:.4g}, "
                  f"torch {dot / na if dot < 0 else 0:.4g})")
            projected += dot < 0
        worst = max(worst, e)
        print(f"step {k + 1}: loss C {c_loss:.8f} torch {float(loss):.8f}  L_a C {c_la:.6e} torch {float(la):.6e}  "
              f"d C {c_dot:.6e} torch {dot:.6e}  rel(g) {rel(cg, g):.2e}  rel(g_u') {rel(cgu, gup):.2e}")
    check(worst <= 1e-4, f"max rel error of loss, L_a, d, g_u', g_a, g over {steps} steps: {worst:.2e} (tol 1e-4)")
    check(projected >= 1, f"the projection was active at {projected} of {steps - 1} steps (at least 1)")
    return not FAILS


def aligned_model(d):
    model = check_trainer.tiny_chat_model(os.path.join(d, "tiny"))
    al = os.path.join(d, "align")
    r = run([CLI, "align", "--model", model, "--out", al, "--data-dir", DATA, "--n-alpaca", "8", "--max-steps", "1",
             "--batch-size", "2", "--max-seq-len", "64", "--no-eval", "--quiet"])
    check(r.returncode == 0, "safetune align on the tiny model " + r.stderr[-300:])
    return os.path.join(al, "aligned"), al


def records(out):
    return [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]


def textual(out):  # every metrics field but the wall-time ones, as text
    return [re.sub(r'"(tokens_per_s|step_s)":[^,}]*', "", line) for line in open(os.path.join(out, "metrics.jsonl"))]


def need_inputs():
    for p in [check_trainer.ALPACA, os.path.join(DATA, "advbench", "harmful_behaviors.csv"),
              os.path.join(check_trainer.MISTRAL_TOK, "tokenizer.json"), CLI]:
        if not os.path.exists(p):
            print("SKIP:", p, "absent")
            sys.exit(77)


def case_cli(tool):
    need_inputs()
    d = fresh("cli")
    aligned, al = aligned_model(d)
    targs = check_trainer.train_args

    def train(name, *extra):
        out = os.path.join(d, name)
        r = run(targs(aligned, out, *extra))
        check(r.returncode == 0, "train %s exits 0 %s" % (" ".join(extra), r.stderr[-400:] if r.returncode else ""))
        return out, r

    # ---- Lisa: T = 25, K1 = 1, K2 = 9 -> alignment steps s = 0, 10, 20 (metrics steps 1, 11, 21) ----
    lisa, rl = train("lisa", "--max-steps", "25", "--lisa", "on", "--lisa-cycle-steps", "10", "--lisa-align-share", "0.1",
                     "--lisa-rho", "1", "--ema-decay", "0.9,0.5")
    recs = [x for x in records(lisa) if x["step"] > 0]
    phases = {x["step"]: x.get("phase") for x in recs}
    check(sorted(s for s, p in phases.items() if p == "align") == [1, 11, 21] and len(phases) == 25 and
          all(p in ("align", "task") for p in phases.values()),
          "Lisa T = 25, K1 = 1, K2 = 9: metrics.jsonl phase 'align' at steps 1, 11, 21 only, 'task' elsewhere")
    pen = {x["step"]: x.get("penalty") for x in recs}
    check(all(pen[s] is None for s in (1, 2, 3)) and all(pen[s] is not None for s in range(4, 26)) and
          pen[11] == 0 and pen[12] == 0 and pen[21] == 0 and pen[22] == 0 and all(pen[s] > 0 for s in (4, 5, 10, 13, 20, 25)),
          "penalty (ρ/2)‖θ−a‖²: absent for s <= 0.1·T, 0 right after each switch (a = θ), > 0 elsewhere")
    cfg = json.load(open(os.path.join(lisa, "config.json")))
    check(cfg.get("lisa") == "on" and cfg.get("lisa_rho") == 1 and cfg.get("lisa_align_share") == 0.1 and
          cfg.get("lisa_cycle_steps") == 10 and cfg.get("safegrad") == "off" and cfg.get("safegrad_rho") == 1 and
          cfg.get("safegrad_project") == "on" and cfg.get("safegrad_align_rows") == 100,
          "config.json records lisa, lisa_rho, lisa_align_share, lisa_cycle_steps and the safegrad_* keys")
    check("alignment set: 260 refusal pairs" in rl.stderr, "the alignment set: the 260 half-a refusal pairs of --model's parent")
    ck = sorted(os.listdir(os.path.join(lisa, "checkpoints"))) if os.path.exists(os.path.join(lisa, "checkpoints")) else []
    # ---- zero strengths = plain FT, bit for bit ----
    plain, _ = train("plain", "--max-steps", "6", "--ema-decay", "0.9,0.5")
    z1, _ = train("lisa0", "--max-steps", "6", "--ema-decay", "0.9,0.5", "--lisa", "on", "--lisa-rho", "0",
                  "--lisa-align-share", "0")
    z2, _ = train("sg0", "--max-steps", "6", "--ema-decay", "0.9,0.5", "--safegrad", "on", "--safegrad-rho", "0",
                  "--safegrad-project", "off")

    def strip(out):
        return [re.sub(r',"(penalty|phase|loss_align|align_dot|proj_coef)":[^,}]*', "", x) for x in textual(out)]
    for z, what in ((z1, "lisa with K1 = 0 and ρ = 0"), (z2, "safegrad with ρ = 0 and the projection off")):
        same = strip(z) == strip(plain) and check_trainer.same_final(z, plain)
        check(same, f"{what}: the metrics and final/, final-ema/, final-ema-0.5/ of plain fine-tuning, bit for bit")
    # ---- SafeGrad through the CLI ----
    sg, _ = train("sg", "--max-steps", "6", "--safegrad", "on", "--safegrad-align-rows", "20", "--lr", "1e-2")
    srec = [x for x in records(sg) if x["step"] > 0]
    # θ = θ_0 before step 1, and before step 2 too (lr 0 at the first warm-up step): L_a = 0 exactly there
    before = [0.0] + [x["theta_dist"] for x in srec[:-1]]
    check(all((x["loss_align"] == 0 and x["align_dot"] == 0) == (b == 0) and x["loss_align"] >= 0 for x, b in zip(srec, before))
          and before[2] > 0 and all("proj_coef" in x for x in srec),
          "safegrad: loss_align = 0 and align_dot = 0 exactly while θ = θ_0 (steps 1, 2), > 0 after; proj_coef logged")
    # ---- bad settings: usage errors before anything is written ----
    bad = [(["--lisa", "on", "--lisa-rho", "-1"], "lisa_rho"),
           (["--lisa", "maybe"], "lisa"),
           (["--lisa", "on", "--lisa-align-share", "1.5"], "lisa_align_share"),
           (["--lisa", "on", "--lisa-cycle-steps", "0"], "lisa_cycle_steps"),
           (["--safegrad", "on", "--safegrad-rho", "-2"], "safegrad_rho"),
           (["--safegrad", "on", "--safegrad-align-rows", "0"], "safegrad_align_rows"),
           (["--lisa", "on", "--safegrad", "on"], "lisa and safegrad"),
           (["--lisa", "on", "--l2sp-alpha", "0.1"], "l2sp_alpha"),
           (["--safegrad", "on", "--l2sp-alpha-decoupled", "0.1"], "l2sp_alpha_decoupled"),
           (["--safegrad", "on", "--finetune", "lora"], "safegrad works on full fine-tuning")]
    for k, (extra, key) in enumerate(bad):
        out = os.path.join(d, f"bad{k}")
        r = run(targs(aligned, out, "--max-steps", "3", *extra))
        check(r.returncode == 2 and key in r.stderr and not os.path.exists(out),
              f"{' '.join(extra)}: exit 2 naming {key}, nothing written: " + (r.stderr.strip().splitlines() or [""])[0][:160])
    # the alignment set is needed: a model whose parent holds none, and no --align-dir
    for flag in ("--lisa", "--safegrad"):
        out = os.path.join(d, "noalign" + flag)
        r = run(targs(check_trainer.tiny_chat_model(os.path.join(d, "tiny2")), out, "--max-steps", "3", flag, "on"))
        check(r.returncode == 2 and flag[2:] in r.stderr and "--align-dir" in r.stderr and not os.path.exists(out),
              f"{flag} on without an alignment set: exit 2 naming {flag[2:]} and --align-dir: " +
              (r.stderr.strip().splitlines() or [""])[0][:160])
    out = os.path.join(d, "toomany")
    r = run(targs(aligned, out, "--max-steps", "3", "--safegrad", "on", "--safegrad-align-rows", "261"))
    check(r.returncode != 0 and "safegrad_align_rows = 261 is more than the 260 rows" in r.stderr and
          not os.path.exists(os.path.join(out, "metrics.jsonl")),
          "safegrad_align_rows above the alignment set's 260 rows refused before training")
    return not FAILS


def case_lisa_resume(tool):
    need_inputs()
    d = fresh("resume")
    aligned, _ = aligned_model(d)
    steps = "25"
    targs = lambda out, *a: check_trainer.train_args(aligned, out, "--max-steps", steps, "--ema-decay", "0.9,0.5",
                                                     "--lisa", "on", "--lisa-cycle-steps", "10", "--lisa-rho", "1", *a)
    ref_out = os.path.join(d, "ref")
    r = run(targs(ref_out))
    check(r.returncode == 0, "the uninterrupted Lisa run " + r.stderr[-300:])
    ref, ref_ema = check_trainer.losses(ref_out), check_trainer.ema_fields(ref_out)
    rng = random.Random(int(os.environ.get("SAFETUNE_TEST_SEED", time.time())))
    ok = True
    # kill after a checkpoint mid-phase (a task phase: 12..19) and right at a switch (11: after the alignment step)
    for target in (rng.choice([13, 15, 17]), 11):
        out = os.path.join(d, f"killed{target}")
        p = subprocess.Popen(targs(out, "--save-every", "1"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ck = os.path.join(out, "checkpoints", f"step-{target:08d}")
        t0 = time.time()
        while not os.path.exists(ck) and p.poll() is None and time.time() - t0 < 300:
            time.sleep(0.002)
        p.send_signal(signal.SIGKILL)
        p.wait()
        reached = max(check_trainer.losses(out))
        blobs = os.listdir(ck) if os.path.exists(ck) else []
        check("x-lisa_anchor.bin" in blobs and "x-align_pos.bin" in blobs,
              f"the checkpoint at step {target} holds Lisa's anchor and the alignment-set position")
        r = run(targs(out, "--save-every", "1", "--resume", "auto"))
        same = (r.returncode == 0 and check_trainer.losses(out) == ref and check_trainer.ema_fields(out) == ref_ema
                and textual(out) == textual(ref_out) and check_trainer.same_final(out, ref_out))
        check(same, f"SIGKILL after checkpoint {target} (metrics had reached step {reached}), --resume auto: every "
              "metrics field (loss, phase, penalty, both EMA drifts) and final/, final-ema/, final-ema-0.5/ bit-identical")
        ok = ok and same
    # a resumed run must use the same Lisa settings
    out = os.path.join(d, f"killed11")
    r = run(targs(out, "--save-every", "1", "--resume", os.path.join(out, "checkpoints", "step-00000024"), "--lisa-rho", "2"))
    check(r.returncode != 0 and "lisa_rho" in r.stderr, "resume with another lisa_rho refused naming it")
    return not FAILS


def main():
    case, tool = sys.argv[1], sys.argv[2]
    ok = {"safegrad_parity": case_safegrad_parity, "cli": case_cli, "lisa_resume": case_lisa_resume}[case](tool)
    print("->", "ok" if ok and not FAILS else "FAIL")
    sys.exit(0 if ok and not FAILS else 1)


if __name__ == "__main__":
    main()
