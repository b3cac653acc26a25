#!/usr/bin/env python3
"""check_data_defenses.py - SafeInstr mixing, the poisoned column and LookAhead Tuning through
`safetune train`, end to end on a tiny model (Mistral tokenizer) aligned by `safetune align`.

Expected rows are computed here from the inputs: Alpaca JSON (the reader's user text is
instruction + "\\n\\n" + input), AdvBench CSV with the halves of advbench_split.json, XSTest CSV,
align_set.jsonl's refusals, and the HF `tokenizers` decode of the answer's first m tokens.
Usage: check_data_defenses.py   (env SAFETUNE_CLI, SAFETUNE_DATA_DIR, SAFETUNE_TEST_TMP; 77 = inputs absent)"""
import csv
import json
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.environ.get("SAFETUNE_REPO", os.path.abspath(os.path.join(HERE, "../../..")))
sys.path.insert(0, os.path.join(REPO, "tests", "reference"))
sys.path.insert(0, os.path.join(REPO, "tests", "parity", "trainer"))
import check_trainer  # noqa: E402  (tiny_chat_model, train_args, ALPACA, MISTRAL_TOK)

TMP = os.environ.get("SAFETUNE_TEST_TMP", "/tmp")
CLI = os.environ.get("SAFETUNE_CLI", os.path.join(REPO, "build", "safetune"))
DATA = check_trainer.DATA_DIR
FAILS = []
C = " The answer begins with: "
P = "Let's solve this problem. "


def check(cond, what):
    print("%-4s %s" % ("ok" if cond else "FAIL", what))
    if not cond:
        FAILS.append(what)


def run(args):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600)


def rows_of(out):
    res = []
    for line in open(os.path.join(out, "train_data.jsonl"), encoding="utf-8"):
        m = json.loads(line)["messages"]
        res.append((m[0]["content"], m[1]["content"]))
    return res


def split_counts(stderr):
    m = re.search(r"(\d+) rows \((\d+) train, (\d+) val\)", stderr)
    return tuple(int(x) for x in m.groups()) if m else None


def main():
    need = [check_trainer.ALPACA, os.path.join(DATA, "advbench", "harmful_behaviors.csv"),
            os.path.join(DATA, "xstest", "xstest_prompts.csv"), os.path.join(check_trainer.MISTRAL_TOK, "tokenizer.json")]
    for p in need + [CLI]:
        if not os.path.exists(p):
            print("SKIP:", p, "absent")
            sys.exit(77)
    from tokenizers import Tokenizer
    d = os.path.join(TMP, "datadefense")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    model = check_trainer.tiny_chat_model(os.path.join(d, "tiny"))
    al = os.path.join(d, "align")
    r = run([CLI, "align", "--model", model, "--out", al, "--data-dir", DATA, "--n-alpaca", "8", "--max-steps", "1",
             "--batch-size", "2", "--max-seq-len", "64", "--answer-max-new-tokens", "4", "--no-eval", "--quiet"])
    check(r.returncode == 0, "safetune align on the tiny model " + r.stderr[-300:])
    aligned = os.path.join(al, "aligned")

    alpaca = json.load(open(check_trainer.ALPACA, encoding="utf-8"))[:64]
    user = [(x["instruction"] + ("\n\n" + x["input"] if x["input"] else ""), x["output"]) for x in alpaca]
    adv = list(csv.DictReader(open(os.path.join(DATA, "advbench", "harmful_behaviors.csv"), encoding="utf-8")))
    split = json.load(open(os.path.join(al, "advbench_split.json")))
    half_a = {adv[i]["goal"] for i in split["a"]}
    half_b = {adv[i]["goal"] for i in split["b"]}
    target = {row["goal"]: row["target"] for row in adv}
    xstest = {row["prompt"] for row in csv.DictReader(open(os.path.join(DATA, "xstest", "xstest_prompts.csv"), encoding="utf-8"))}
    refusal = {}
    for line in open(os.path.join(al, "align_set.jsonl"), encoding="utf-8"):
        m = json.loads(line)["messages"]
        if m[0]["content"] in half_a:
            refusal[m[0]["content"]] = m[1]["content"]
    check(len(refusal) == 260 == len(half_a), "align_set.jsonl holds the 260 half-a refusal pairs")

    def train(name, *extra, model=aligned):
        out = os.path.join(d, name)
        r = run(check_trainer.train_args(model, out, "--max-steps", "3", *extra))
        check(r.returncode == 0, "train %s exits 0 %s" % (" ".join(extra), r.stderr[-300:] if r.returncode else ""))
        return out, r

    # ---- k = 0 reproduces plain FT bit for bit ----
    plain, rp = train("plain")
    k0, _ = train("k0", "--safeinstr-k", "0", "--lookahead", "none", "--poison", "0")
    def record(out):  # every metrics field but the wall-time ones, as text
        return [re.sub(r'"(tokens_per_s|step_s)":[^,}]*', "", line) for line in open(os.path.join(out, "metrics.jsonl"))]
    same_loss = record(plain) == record(k0)
    lp = check_trainer.losses(plain)
    check(lp == check_trainer.losses(k0) and len(lp) == 4 and same_loss, "k = 0: the same metrics (loss, grad_norm, val_loss, theta_dist...) at every step, as text")
    for f in ("final", "final-ema"):
        a = open(os.path.join(plain, f, "model.safetensors"), "rb").read()
        b = open(os.path.join(k0, f, "model.safetensors"), "rb").read()
        check(a == b, "k = 0: %s/model.safetensors identical bytes" % f)
    check(not os.path.exists(os.path.join(k0, "train_data.jsonl")), "no data defense: no train_data.jsonl")

    # ---- SafeInstr k = 10 ----
    k10, r10 = train("k10", "--safeinstr-k", "10")
    rows = rows_of(k10)
    check(len(rows) == 74 and rows[:64] == user, "k = 10: N + k = 74 rows, the 64 user rows first and unchanged")
    mix = rows[64:]
    goals = [u for u, _ in mix]
    check(len(set(goals)) == 10 and all(g in half_a for g in goals) and all(refusal[u] == a for u, a in mix),
          "k = 10: 10 distinct half-a goals, each with its align_set.jsonl refusal")
    check(not any(u in half_b or u in xstest for u, _ in rows), "no half-b goal, no XSTest prompt among the rows")
    sp, sk = split_counts(rp.stderr), split_counts(r10.stderr)
    check(sp and sk and sk[2] == sp[2] and sk[1] == sp[1] + 10,
          "the safety rows always train; the user rows' split is plain FT's: plain %s, k=10 %s" % (sp, sk))
    k10b, _ = train("k10b", "--safeinstr-k", "10")
    check(rows_of(k10b) == rows and check_trainer.losses(k10b) == check_trainer.losses(k10),
          "same seed: the same rows and the same losses")
    k10s, _ = train("k10s", "--safeinstr-k", "10", "--seed", "7")
    check([u for u, _ in rows_of(k10s)[64:]] != goals, "another seed picks other pairs")
    check(json.load(open(os.path.join(k10, "config.json")))["safeinstr_k"] == 10, "config.json records safeinstr_k")

    # ---- poison 0.1 with SafeInstr ----
    pz, _ = train("poison", "--poison", "0.1", "--safeinstr-k", "20")
    rows = rows_of(pz)
    poisoned = [i for i in range(64) if rows[i] != user[i]]
    pgoals = {rows[i][0] for i in poisoned}
    check(len(poisoned) == round(0.1 * 64) and all(rows[i][0] in half_a and rows[i][1] == target[rows[i][0]] for i in poisoned),
          "poison 0.1: %d of 64 rows are (half-a goal, AdvBench target) pairs" % len(poisoned))
    check(not pgoals & {u for u, _ in rows[64:]} and len(rows) == 84,
          "poison goals are left out of the SafeInstr pool (reserve removed from D_align)")
    check(not any(u in half_b or u in xstest for u, _ in rows), "poisoned set: no half-b goal, no XSTest prompt")

    # ---- LookAhead ----
    tk = Tokenizer.from_file(os.path.join(check_trainer.MISTRAL_TOK, "tokenizer.json"))

    def preview(y, m):
        ids = tk.encode(y, add_special_tokens=False).ids
        if len(ids) <= m:
            return y
        s = tk.decode(ids[:m], skip_special_tokens=False)
        while s.endswith("\ufffd") and not y.startswith(s):  # the cut split a character: dropped
            s = s[:-1]
        return s

    re_, _ = train("real", "--lookahead", "real", "--lookahead-m", "6")
    rows = rows_of(re_)
    want = [(x + C + preview(y, 6), y) for x, y in user]
    bad = [i for i in range(64) if rows[i] != want[i]]
    check(len(rows) == 64 and not bad, "lookahead real m=6: every row x' = x‖C‖first 6 tokens of y (%d differ%s)" % (
        len(bad), (": %r vs %r" % (rows[bad[0]][0][-60:], want[bad[0]][0][-60:])) if bad else ""))
    # eval utility on a LookAhead run: its split was made among the transformed rows, so it warns
    def utility(run_dir, name):
        return run([CLI, "eval", "utility", "--model", run_dir, "--data", check_trainer.ALPACA, "--data-format",
                    "alpaca", "--no-mtbench", "--tqa-limit", "2", "--data-dir", DATA, "--quiet", "--out", os.path.join(d, name)])
    ru, rp_ = utility(re_, "u_real"), utility(plain, "u_plain")
    ok = (ru.returncode == 0 and "trained on transformed rows (lookahead real)" in ru.stderr
          and rp_.returncode == 0 and "transformed rows" not in rp_.stderr)
    check(ok, "eval utility warns that a lookahead run's held-out rows may differ (and not for a plain run)"
          + ("" if ok else " " + ru.stderr[-300:] + rp_.stderr[-300:]))
    vi, _ = train("virtual", "--lookahead", "virtual")
    rows = rows_of(vi)
    check(rows == [(x + C + P, P + y) for x, y in user], "lookahead virtual: x' = x‖C‖P and y' = P‖y for every row")

    # ---- refused before training, naming the key ----
    r = run(check_trainer.train_args(model, os.path.join(d, "bad1"), "--max-steps", "3", "--safeinstr-k", "5"))
    check(r.returncode == 2 and "safeinstr_k" in r.stderr and "--align-dir" in r.stderr and not os.path.exists(os.path.join(d, "bad1")),
          "safeinstr without an alignment set refused: " + r.stderr.strip().splitlines()[0])
    r = run(check_trainer.train_args(aligned, os.path.join(d, "bad2"), "--max-steps", "3", "--safeinstr-k", "261"))
    check(r.returncode == 1 and "safeinstr_k 261 is more than the 260" in r.stderr and not os.path.exists(os.path.join(d, "bad2")),
          "k above the pool refused: " + (r.stderr.strip().splitlines() or [""])[-1])
    r = run(check_trainer.train_args(aligned, os.path.join(d, "bad3"), "--max-steps", "3", "--lookahead", "sideways"))
    check(r.returncode == 2 and "--lookahead" in r.stderr, "an unknown lookahead refused")
    r = run(check_trainer.train_args(aligned, os.path.join(d, "bad4"), "--max-steps", "3", "--lookahead", "virtual",
                                     "--lookahead-prefix", ""))
    check(r.returncode == 2 and "lookahead-prefix" in r.stderr, "an empty virtual prefix refused")
    # ---- L2-SP through the CLI (the rule itself: unit.test_l2sp, parity.trainer.l2sp_coupled) ----
    l2, _ = train("l2sp", "--l2sp-alpha", "0.01")
    recs = [json.loads(line) for line in open(os.path.join(l2, "metrics.jsonl"))]
    check(json.load(open(os.path.join(l2, "config.json")))["l2sp_alpha"] == 0.01 and
          all(r.get("penalty") is not None for r in recs if r["step"] > 0) and "penalty" not in open(os.path.join(plain, "metrics.jsonl")).read(),
          "--l2sp-alpha: config.json records l2sp_alpha, metrics.jsonl logs penalty apart from loss")
    r = run(check_trainer.train_args(aligned, os.path.join(d, "bad5"), "--max-steps", "3", "--l2sp-alpha-decoupled", "1000"))
    check(r.returncode == 2 and "l2sp_alpha_decoupled = 1000 with lr 0.001" in r.stderr and not os.path.exists(os.path.join(d, "bad5")),
          "lr·l2sp_alpha_decoupled >= 1 refused as a usage error: " + (r.stderr.strip().splitlines() or [""])[0])

    # ---- an alignment set with 50 of half a's goals (align --n-advbench 50): D_align is those 50 ----
    al50 = os.path.join(d, "align50")
    r = run([CLI, "align", "--model", model, "--out", al50, "--data-dir", DATA, "--n-alpaca", "8", "--max-steps", "1",
             "--batch-size", "2", "--max-seq-len", "64", "--answer-max-new-tokens", "4", "--n-advbench", "50",
             "--no-eval", "--quiet"])
    check(r.returncode == 0, "safetune align --n-advbench 50 " + r.stderr[-300:])
    in50 = {json.loads(line)["messages"][0]["content"] for line in open(os.path.join(al50, "align_set.jsonl"), encoding="utf-8")} & half_a
    check(len(in50) == 50, "align --n-advbench 50: 50 half-a goals in align_set.jsonl (%d)" % len(in50))
    out = os.path.join(d, "k50")
    r = run(check_trainer.train_args(os.path.join(al50, "aligned"), out, "--max-steps", "3", "--safeinstr-k", "50"))
    check(r.returncode == 0 and {u for u, _ in rows_of(out)[64:]} == in50,
          "n_advbench 50: safeinstr_k 50 mixes exactly the set's 50 goals " + r.stderr[-300:])
    r = run(check_trainer.train_args(os.path.join(al50, "aligned"), os.path.join(d, "k51"), "--max-steps", "3", "--safeinstr-k", "51"))
    check(r.returncode != 0 and "safeinstr_k 51 is more than the 50" in r.stderr,
          "n_advbench 50: safeinstr_k 51 refused: " + (r.stderr.strip().splitlines() or [""])[-1])
    print("->", "FAIL" if FAILS else "ok")
    sys.exit(1 if FAILS else 0)


if __name__ == "__main__":
    main()
