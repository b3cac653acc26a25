#!/usr/bin/env python3
"""CLI checks of `safetune align` and of `safetune study` with the real hooks: usage errors exit 2,
bad inputs give one error line naming the problem, and a bad study config fails before any run
folder is created. Independent of our C code: only the CLI's exit codes, stderr and files."""
import json
import os
import shutil
import subprocess
import sys


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=60, **kw)


def main():
    exe, tmp = sys.argv[1], sys.argv[2]
    repo = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../..")
    data = os.environ.get("SAFETUNE_DATA_DIR") or os.path.join(repo, "data")
    mdir = os.environ.get("SAFETUNE_MODEL_DIR") or os.path.join(repo, "models")
    model = os.path.join(mdir, "SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.path.exists(model) or not os.path.isdir(data):
        print("SKIP: model or data missing")
        return 77
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    fails = []

    def expect(cond, what):
        if not cond:
            fails.append(what)

    r = run([exe, "align", "--help"])
    expect(r.returncode == 0 and "--model" in r.stdout + r.stderr, "align --help")
    r = run([exe, "align", "--out", tmp + "/a"])
    expect(r.returncode == 2 and "--model" in r.stderr, "align without --model: exit 2 naming --model")
    r = run([exe, "align", "--model", tmp + "/nope.gguf", "--out", tmp + "/a"])
    expect(r.returncode == 1 and "nope.gguf" in r.stderr, "align with a missing model names it")
    expect(not os.path.exists(tmp + "/a/aligned"), "nothing built for a missing model")

    def study_cfg(extra):
        cfg = {"model": model, "data_dir": data,
               "datasets": [{"path": "alpaca/alpaca_5000.json", "format": "alpaca", "limit": 100}],
               "lr": [1e-5], "batch_size": [1], "max_steps": [1], "report": {"plots": False}}
        cfg.update(extra)
        p = os.path.join(tmp, "cfg.json")
        with open(p, "w") as f:
            json.dump(cfg, f)
        return p

    cases = [
        ({"align": {"enabled": True}}, "eval.advbench_split"),
        ({"align": {"enabled": True, "n_alpacca": 3}}, "n_alpacca"),
        ({"align": {"enabled": True, "lr": 2.0}, "eval": {"advbench_split": "b"}}, "align.lr"),
        ({"lr": []}, "lr"),
    ]
    for i, (extra, needle) in enumerate(cases):
        out = os.path.join(tmp, "out%d" % i)
        r = run([exe, "study", "--config", study_cfg(extra), "--out", out])
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        expect(r.returncode != 0 and needle in r.stderr and len(lines) == 1,
               "study config %r: one error line naming %s (got rc %d: %r)" % (extra, needle, r.returncode, r.stderr))
        expect(not os.path.exists(os.path.join(out, "runs")), "no run folder for a bad config %r" % (extra,))
    if fails:
        for f in fails:
            print("FAIL:", f)
        return 1
    print("OK: align/study CLI error paths (%d checks)" % (4 + 2 * len(cases)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
