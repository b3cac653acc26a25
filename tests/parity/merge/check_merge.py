#!/usr/bin/env python3
"""check_merge.py - `safetune merge` and `train --merge` (DEFENSES.md §1) end to end.

References, computed here from the input safetensors (never from our output):
  linear(λ): (1−λ)·θ0 + λ·θ_ft; λ = 0 and 1 must be the inputs bit for bit.
  slerp(t):  mergekit's slerp (arcee-ai/mergekit merge_methods/slerp.py, rewritten): float32
             inputs, normalise with eps 1e-8, |dot| > 0.9995 -> lerp, else sin-weights; the C code
             works in double, so the two agree to ~1e-6.
  dare(λ,p,seed): the keep mask re-derived from the documented hash (splitmix64 element index+1
             of the stream seeded with mix64(seed)) and the merge θ0 + λ·m⊙δ/(1−p).
Usage: check_merge.py   (env SAFETUNE_CLI, SAFETUNE_TEST_TMP; exit 77 when inputs are absent)"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.environ.get("SAFETUNE_REPO", os.path.abspath(os.path.join(HERE, "../../..")))
sys.path.insert(0, os.path.join(REPO, "tests", "reference"))
sys.path.insert(0, os.path.join(REPO, "tests", "parity", "trainer"))
import llama_ref  # noqa: E402
import check_trainer  # noqa: E402  (tiny_chat_model, train_args)

TMP = os.environ.get("SAFETUNE_TEST_TMP", "/tmp")
CLI = os.environ.get("SAFETUNE_CLI", os.path.join(REPO, "build", "safetune"))
FAILS = []


def check(cond, what):
    print("%-4s %s" % ("ok" if cond else "FAIL", what))
    if not cond:
        FAILS.append(what)


def run(args):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600)


def load(d):
    from safetensors.numpy import load_file
    return load_file(os.path.join(d, "model.safetensors"))


def save(d, w, cfg_from):
    from safetensors.numpy import save_file
    os.makedirs(d, exist_ok=True)
    save_file(w, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    shutil.copy(os.path.join(cfg_from, "config.json"), d)


def mergekit_slerp(t, v0, v1, dot_threshold=0.9995, eps=1e-8):
    """mergekit's slerp on float32 arrays (as mergekit converts its tensors); returns (array, fell back)."""
    c0, c1 = v0.copy(), v1.copy()
    n0, n1 = np.linalg.norm(v0), np.linalg.norm(v1)
    if n0 > eps:
        v0 = v0 / n0
    if n1 > eps:
        v1 = v1 / n1
    dot = np.sum(v0 * v1)
    if np.abs(dot) > dot_threshold:
        return (1 - t) * c0 + t * c1, True
    th0 = np.arccos(dot)
    s = np.sin(th0)
    return (np.sin(th0 - th0 * t) / s) * c0 + (np.sin(th0 * t) / s) * c1, False


M64 = (1 << 64) - 1


def mix64(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def dare_uniform(seed, idx):
    """Vectorised over idx (uint64 array): element idx+1 of splitmix64 seeded with mix64(seed)."""
    with np.errstate(over="ignore"):
        z = np.uint64(mix64(seed)) + (idx + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def flat_order(cfg_dir):
    """Tensor names in safetune's flat layout order with their offsets (DARE's mask is keyed by the
    flat index): the order of weights.h (embed, per layer: input norm, q, k, v, o, post norm, gate,
    up, down; final norm; lm_head when untied)."""
    cfg = json.load(open(os.path.join(cfg_dir, "config.json")))
    names = ["model.embed_tokens.weight"]
    for layer in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % layer
        names += [p + "input_layernorm.weight", p + "self_attn.q_proj.weight", p + "self_attn.k_proj.weight",
                  p + "self_attn.v_proj.weight", p + "self_attn.o_proj.weight", p + "post_attention_layernorm.weight",
                  p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight", p + "mlp.down_proj.weight"]
    names.append("model.norm.weight")
    if not cfg.get("tie_word_embeddings", False):
        names.append("lm_head.weight")
    return names


def main():
    if not os.path.exists(CLI):
        print("SKIP: no", CLI)
        sys.exit(77)
    d = os.path.join(TMP, "merge_cli")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    base = os.path.join(d, "base")
    llama_ref.write_tiny_random(base, seed=3, vocab_size=96, hidden_size=32, intermediate_size=64,
                                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                tie_word_embeddings=False)
    w0 = load(base)
    rng = np.random.default_rng(11)
    names = sorted(w0)
    wft = {}
    for i, n in enumerate(names):  # half the tensors barely move (SLERP falls back), half move far
        noise = rng.standard_normal(w0[n].shape).astype(np.float32)
        wft[n] = (w0[n] + (0.001 if i % 2 else 1.0) * noise * np.std(w0[n])).astype(np.float32)
    ft = os.path.join(d, "ft")
    save(ft, wft, base)

    def merge(spec, name, *extra):
        out = os.path.join(d, name)
        r = run([CLI, "merge", "--base", base, "--model", ft, "--merge", spec, "--out", out] + list(extra))
        if r.returncode != 0:
            print(r.stderr)
        check(r.returncode == 0, "merge %s exits 0" % spec)
        return load(out), json.load(open(os.path.join(out, "merge.json")))

    # linear endpoints bit for bit, interior to rounding
    m, _ = merge("linear:0", "lin0")
    check(all(np.array_equal(m[n].view(np.uint32), w0[n].view(np.uint32)) for n in names), "linear:0 == θ0 bit for bit")
    m, _ = merge("linear:1", "lin1")
    check(all(np.array_equal(m[n].view(np.uint32), wft[n].view(np.uint32)) for n in names), "linear:1 == θ_ft bit for bit")
    m, j = merge("linear:0.6", "lin06")
    err = max(float(np.max(np.abs(m[n] - (0.4 * w0[n].astype(np.float64) + 0.6 * wft[n])))) for n in names)
    check(err < 1e-6, "linear:0.6 == 0.4·θ0 + 0.6·θ_ft (max abs err %.2e)" % err)
    dft = np.sqrt(sum(float(np.sum((wft[n].astype(np.float64) - w0[n]) ** 2)) for n in names))
    check(abs(j["theta_dist"] - 0.6 * dft) < 1e-5 * dft and abs(j["lambda_proj"] - 0.6) < 1e-5,
          "linear:0.6 merge.json: theta_dist %.6g = 0.6·‖θ_ft−θ0‖ (%.6g), lambda_proj %.6f" % (j["theta_dist"], 0.6 * dft, j["lambda_proj"]))

    # SLERP vs mergekit's
    m, j = merge("slerp:0.7", "slerp07")
    worst, n_fb = 0.0, 0
    for n in names:
        ref, fb = mergekit_slerp(0.7, w0[n].ravel(), wft[n].ravel())
        n_fb += fb
        worst = max(worst, float(np.max(np.abs(m[n].ravel() - ref)) / max(np.max(np.abs(ref)), 1e-30)))
    check(worst < 1e-6, "slerp:0.7 matches mergekit's slerp per tensor (max rel err %.2e)" % worst)
    check(0 < n_fb < len(names) and j["slerp_fallback_tensors"] == n_fb and
          abs(j["slerp_fallback_fraction"] - n_fb / len(names)) < 1e-12,
          "slerp fallback: %d of %d tensors in mergekit, merge.json says %s" % (n_fb, len(names), j["slerp_fallback_tensors"]))

    # DARE: mask from the documented hash, keyed by the flat index
    order = flat_order(base)
    check(sorted(order) == names, "flat layout order covers every tensor")
    for spec, lam, p, seed, extra in (("dare:0.7:0.9:5", 0.7, 0.9, 5, []), ("dare:0.5:0.5", 0.5, 0.5, 17, ["--seed", "17"]),
                                      ("dare:0.7:0", 0.7, 0.0, 42, [])):
        m, j = merge(spec, spec.replace(":", "_"), *extra)
        off, bad, kept, total = 0, 0, 0, 0
        for n in order:
            a, b = w0[n].ravel().astype(np.float64), wft[n].ravel().astype(np.float64)
            keep = dare_uniform(seed, np.arange(off, off + a.size, dtype=np.uint64)) >= p
            want = np.where(keep, a + (lam / (1 - p)) * (b - a), a).astype(np.float32)
            bad += int(np.sum(want.view(np.uint32) != m[n].ravel().view(np.uint32)))
            kept += int(keep.sum())
            total += a.size
            off += a.size
        check(bad == 0 and abs(j["kept_fraction"] - kept / total) < 1e-12 and j["seed"] == seed,
              "%s: every coordinate as the hash mask says (%d mismatches), kept %.4f, seed %s" % (spec, bad, kept / total, j["seed"]))

    # bad input: usage errors name the key; another architecture is refused
    for spec, words in (("linear:1.5", "lambda 1.5 is outside [0, 1]"), ("slerp:-1", "t -1"), ("dare:0.7:1", "p 1"),
                        ("ties:0.5", "unknown method")):
        r = run([CLI, "merge", "--base", base, "--model", ft, "--merge", spec, "--out", os.path.join(d, "bad")])
        check(r.returncode == 2 and words in r.stderr and not os.path.exists(os.path.join(d, "bad")),
              "merge %s refused (exit %d): %s" % (spec, r.returncode, r.stderr.strip().splitlines()[0] if r.stderr else ""))
    r = run([CLI, "merge", "--base", base, "--model", ft, "--merge", "linear:0.5", "--out", os.path.join(d, "lin0")])
    check(r.returncode == 2 and "--overwrite" in r.stderr, "an existing --out is refused without --overwrite")
    other = os.path.join(d, "other")
    llama_ref.write_tiny_random(other, seed=4, vocab_size=96, hidden_size=32, intermediate_size=48,
                                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    r = run([CLI, "merge", "--base", other, "--model", ft, "--merge", "linear:0.5", "--out", os.path.join(d, "bad")])
    check(r.returncode == 1 and "not the same architecture" in r.stderr and not os.path.exists(os.path.join(d, "bad")),
          "another architecture refused: %s" % r.stderr.strip())

    # train --merge: final-merge-<spec>/ from the run's θ0 (its --model) and final live weights
    if not os.path.exists(check_trainer.ALPACA) or not os.path.exists(os.path.join(check_trainer.MISTRAL_TOK, "tokenizer.json")):
        print("SKIP part: train --merge needs", check_trainer.ALPACA, "and the Mistral tokenizer")
    else:
        model = check_trainer.tiny_chat_model(os.path.join(d, "chat"))
        out = os.path.join(d, "run")
        r = run(check_trainer.train_args(model, out, "--max-steps", "4", "--merge", "linear:0.5,dare:0.7:0.9,slerp:0.7"))
        check(r.returncode == 0, "train --merge exits 0 " + r.stderr[-300:])
        a, f = load(model), load(os.path.join(out, "final"))
        m = load(os.path.join(out, "final-merge-linear-0.5"))
        err = max(float(np.max(np.abs(m[n] - (0.5 * a[n].astype(np.float64) + 0.5 * f[n])))) for n in a)
        check(err < 1e-6, "final-merge-linear-0.5 = ½(θ0 + final) (max abs err %.2e)" % err)
        jd = json.load(open(os.path.join(out, "final-merge-dare-0.7-0.9", "merge.json")))
        check(jd["seed"] == 42 and os.path.exists(os.path.join(out, "final-merge-slerp-0.7", "tokenizer.json")),
              "DARE seed defaults to the run's --seed; merged folders carry the tokenizer")
        cfg = json.load(open(os.path.join(out, "config.json")))
        check(cfg.get("merge") == "linear:0.5,dare:0.7:0.9,slerp:0.7", "config.json records --merge")
        # safetune merge on the run: its own start is taken silently, another start is named
        r = run([CLI, "merge", "--base", model, "--model", os.path.join(out, "final"), "--merge", "linear:0.5",
                 "--out", os.path.join(d, "m_run")])
        r2 = run([CLI, "merge", "--base", base, "--model", os.path.join(out, "final"), "--merge", "linear:0.5",
                  "--out", os.path.join(d, "m_other")])
        check(r.returncode == 0 and "not the start" not in r.stderr, "merge --base = the run's start: no warning " + r.stderr[-200:])
        check("is not the start this run trained from" in r2.stderr and model in r2.stderr,
              "merge --base other than the run's start (its config.json model) is named: " + r2.stderr.strip()[-300:])
        r = run(check_trainer.train_args(model, os.path.join(d, "run_bad"), "--max-steps", "4", "--merge", "linear:0.5,linear:2"))
        check(r.returncode == 2 and "lambda 2 is outside" in r.stderr and not os.path.exists(os.path.join(d, "run_bad")),
              "train --merge with a bad spec refused before training: " + r.stderr.strip().splitlines()[0])
    print("->", "FAIL" if FAILS else "ok")
    sys.exit(1 if FAILS else 0)


if __name__ == "__main__":
    main()
