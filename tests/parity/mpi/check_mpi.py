#!/usr/bin/env python3
"""Data-parallel `mpirun -np 2 safetune train` against the one-process run (docs/mpi.md).

Cases (one ctest test each; 2 ranks x 1 thread, --oversubscribe for 2-core machines):
  dp    10 steps with warm-up, clipping and two EMA decays: the 2-rank run (plain and --zero1)
        against the one-process run with the same global batch (grad_accum 4 x batch 2): every
        loss and the final live and EMA weights within rel 1e-6; two 2-rank runs bit-identical.
  kill  SIGKILL one rank of a 2-rank --zero1 run after a checkpoint, `--resume auto`: remaining
        losses and final weights bit-identical to the uninterrupted 2-rank run; its checkpoint
        resumed by one process (another world) continues within rel 1e-6 of it.
  study `mpirun -np 2 safetune study --fake`: results.csv byte-identical to the 1-process study;
        a rank that dies mid-study, then the restarted study resumes to the same results; a rank
        with another config is refused naming the key that differs.
  bad   bad launches end every rank with one clear message, not a hang: ranks with other
        settings (the key that differs named), a usage error on one rank or all (its own
        message, exit 2 as in one process), other data, a rank that cannot write --out, --resume of a checkpoint with a
        shard missing, --resume auto where one rank sees no checkpoint, `eval` under mpirun.
Usage: check_mpi.py CASE     (exit 77 = skipped: input absent)"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
from safetensors.numpy import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "trainer"))
import check_trainer as ct  # noqa: E402  (tiny_chat_model, losses, ALPACA, CLI)

MPIRUN = shutil.which("mpirun")
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1",
           OMPI_MCA_rmaps_base_oversubscribe="1")
TIMEOUT = 240


def targs(model, out, *extra):
    return ["train", "--model", model, "--data", ct.ALPACA, "--data-format", "alpaca", "--out", out,
            "--max-rows", "64", "--max-seq-len", "48", "--batch-size", "2", "--grad-accum", "4",
            "--lr", "2e-3", "--warmup-steps", "3", "--lr-schedule", "cosine", "--max-grad-norm", "0.5",
            "--ema-decay", "0.9,0.5", "--val-fraction", "0.1", "--eval-every", "5", "--quiet",
            "--max-steps", "10"] + list(extra)


def mpi(n, args, wrapper=None):
    cmd = [MPIRUN, "--oversubscribe", "-np", str(n)] + (["sh", wrapper] if wrapper else []) + [ct.CLI] + args
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=TIMEOUT)


def one(args):
    return subprocess.run([ct.CLI] + args, capture_output=True, text=True, env=ENV, timeout=TIMEOUT)


def must(r, what):
    if r.returncode != 0:
        print(f"{what} failed (exit {r.returncode}):\n{r.stdout}\n{r.stderr}")
        sys.exit(1)


def weights(out, sub):
    t = load_file(os.path.join(out, sub, "model.safetensors"))
    return np.concatenate([t[k].astype(np.float64).ravel() for k in sorted(t)])


def rel(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def loss_values(out):
    return {k: (float(v) if v != "null" else None) for k, v in ct.losses(out).items()}


def compare(out, ref, tol):
    """max rel difference of losses and final/, final-ema/, final-ema-0.5/ weights."""
    a, b = loss_values(out), loss_values(ref)
    if sorted(a) != sorted(b):
        return float("inf"), f"steps {sorted(a)} vs {sorted(b)}"
    worst = max(abs(a[k] - b[k]) / abs(b[k]) for k in b if b[k] is not None)
    w = max(rel(weights(out, s), weights(ref, s)) for s in ("final", "final-ema", "final-ema-0.5"))
    return max(worst, w), f"losses rel {worst:.2e}, weights rel {w:.2e}"


def same_bits(out, ref):
    return ct.losses(out) == ct.losses(ref) and ct.same_final(out, ref)


def setup(name):
    if not os.path.exists(ct.ALPACA):
        ct.skip(f"{ct.ALPACA} absent")
    if not MPIRUN:
        ct.skip("mpirun absent (scripts/install_deps.sh installs openmpi-bin)")
    d = ct.fresh("mpi_" + name)
    return d, ct.tiny_chat_model(os.path.join(d, "model"))


def case_dp():
    d, model = setup("dp")
    ref = os.path.join(d, "one")
    must(one(targs(model, ref)), "one-process run")
    ok = True
    for label, extra in (("plain", []), ("zero1", ["--zero1"])):
        outs = [os.path.join(d, f"{label}{i}") for i in (1, 2)]
        for o in outs:
            must(mpi(2, targs(model, o, *extra)), f"2-rank {label} run")
        err, txt = compare(outs[0], ref, 1e-6)
        same = same_bits(outs[0], outs[1])
        print(f"2 ranks {label} vs 1 process (10 steps, warm-up 3, clip 0.5, EMA 0.9 and 0.5): {txt} "
              f"(tol 1e-6); two 2-rank runs bit-identical: {same}")
        ok = ok and err <= 1e-6 and same and len(ct.losses(ref)) == 11
    return ok


def rank_pids(p):
    """pids of the ranks mpirun started (its children that run safetune)."""
    kids = []
    for task in os.listdir(f"/proc/{p.pid}/task"):
        try:
            kids += open(f"/proc/{p.pid}/task/{task}/children").read().split()
        except OSError:
            pass
    out = []
    for k in kids:
        try:
            if "safetune" in open(f"/proc/{k}/cmdline").read():
                out.append(int(k))
        except OSError:
            pass
    return sorted(out)


def case_kill():
    d, model = setup("kill")
    args = lambda o, *e: targs(model, o, "--zero1", "--save-every", "1", "--keep-checkpoints", "0",
                               "--max-steps", "16", *e)
    ref = os.path.join(d, "ref")
    must(mpi(2, args(ref)), "uninterrupted 2-rank run")
    out = os.path.join(d, "killed")
    cmd = [MPIRUN, "--oversubscribe", "-np", "2", ct.CLI] + args(out)
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
    ck = os.path.join(out, "checkpoints", "step-00000005")
    t0 = time.time()
    while not os.path.exists(ck) and p.poll() is None and time.time() - t0 < 120:
        time.sleep(0.005)
    pids = rank_pids(p)
    if p.poll() is not None or len(pids) != 2:
        print(f"could not find both ranks to kill (mpirun exit {p.poll()}, ranks {pids})")
        return False
    os.kill(pids[1], signal.SIGKILL)
    try:
        p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        print("FAIL: mpirun did not end within 60 s after a rank was killed")
        return False
    before = max(ct.losses(out))
    print(f"SIGKILL of rank pid {pids[1]} after checkpoint step 5 appeared: mpirun exit {p.returncode}, "
          f"metrics had reached step {before}")
    ok = p.returncode != 0 and before < 16
    r = mpi(2, args(out, "--resume", "auto"))
    print((r.stderr.strip().splitlines() or [""])[0])
    same = r.returncode == 0 and same_bits(out, ref)
    print(f"--resume auto with 2 ranks: losses and final/, final-ema/, final-ema-0.5/ bit-identical to the "
          f"uninterrupted run: {same}")
    ok = ok and same
    # the 2-rank ZeRO-1 checkpoint holds the whole state: one process resumes it
    other = os.path.join(d, "world1")
    os.makedirs(os.path.join(other, "checkpoints"))
    shutil.copytree(os.path.join(ref, "checkpoints", "step-00000008"), os.path.join(other, "checkpoints", "step-00000008"))
    shutil.copy(os.path.join(ref, "metrics.jsonl"), os.path.join(other, "metrics.jsonl"))
    r = one(args(other, "--resume", "auto"))
    err, txt = compare(other, ref, 1e-6) if r.returncode == 0 else (float("inf"), r.stderr)
    print(f"2-rank ZeRO-1 checkpoint of step 8 resumed by one process: {txt} (tol 1e-6)")
    return ok and err <= 1e-6


WRAP = """#!/bin/sh
# rank 1 runs in its own mount namespace where DST is replaced by SRC (read-only with RO=1)
if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then
  exec unshare -m --propagation private sh -c 'mount --bind $0 "$SRC" "$DST" && exec "$@"' "${RO:+-o ro}" "$@"
fi
exec "$@"
"""


def bad(d, what, args, must_have, n=2, wrapper=None, env=None, rc=None):
    if env:
        ENV.update(env)
    t0 = time.time()
    try:
        r = mpi(n, args, wrapper)
    except subprocess.TimeoutExpired:
        print(f"{what}: HANG (no exit within {TIMEOUT} s) -> FAIL")
        return False
    finally:
        for k in env or {}:
            ENV.pop(k, None)
    err = r.stderr
    lines = [l for l in err.splitlines() if l.strip()]
    hits = sum(must_have in l for l in lines)
    good = r.returncode != 0 and hits == 1 and (rc is None or r.returncode == rc)
    print(f"{what}: exit {r.returncode} in {time.time() - t0:.1f} s: "
          f"{next((l for l in lines if must_have in l), '(no message)')} -> {'ok' if good else 'FAIL'}")
    if not good:
        print(err)
    return good


def case_bad():
    d, model = setup("bad")
    wrap = os.path.join(d, "wrap.sh")
    open(wrap, "w").write(WRAP)
    ok = True
    # rank 1 sees another --lr: a wrapper rewrites its command line
    lr_wrap = os.path.join(d, "lr.sh")
    open(lr_wrap, "w").write('#!/bin/sh\nif [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then\n'
                             '  cmd=$1; shift; exec "$cmd" "$@" --lr 1e-4\nfi\nexec "$@"\n')
    ok &= bad(d, "rank 1 with another --lr", targs(model, os.path.join(d, "o1")),
              "rank 1 of 2: key 'lr' (--lr) is 0.0001 here but 0.002 on rank 0", wrapper=lr_wrap)
    # a usage error on rank 1 only: its own message reaches rank 0 (not the "(see --help)" hint
    # that follows it), and every path ends with the usage exit code 2, as one process does
    bad_wrap = os.path.join(d, "bad.sh")
    open(bad_wrap, "w").write('#!/bin/sh\nif [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then\n'
                              '  cmd=$1; shift; exec "$cmd" "$@" $BAD\nfi\nexec "$@"\n')
    lr_msg = "--lr abc: lr = 'abc': expected a number"
    r = one(targs(model, os.path.join(d, "o0")) + ["--lr", "abc"])
    one_ok = r.returncode == 2 and lr_msg in r.stderr
    print(f"one process with --lr abc: exit {r.returncode} -> {'ok' if one_ok else 'FAIL'}")
    ok &= one_ok
    ok &= bad(d, "rank 1 with --lr abc", targs(model, os.path.join(d, "o0")), "rank 1 of 2: " + lr_msg,
              wrapper=bad_wrap, env={"BAD": "--lr abc"}, rc=2)
    ok &= bad(d, "both ranks with --lr abc", targs(model, os.path.join(d, "o0")) + ["--lr", "abc"],
              lr_msg, rc=2)
    ok &= bad(d, "rank 1 with an unknown option", targs(model, os.path.join(d, "o0")),
              "rank 1 of 2: unknown option '--lrr' (did you mean '--lr'?)", wrapper=bad_wrap, env={"BAD": "--lrr 1"}, rc=2)
    # rank 1 reads another data file at the same path
    other = os.path.join(d, "other.json")
    rows = json.load(open(ct.ALPACA))[:64]
    rows[5]["output"] = rows[5]["output"] + " (edited)"
    json.dump(rows, open(other, "w"))
    ok &= bad(d, "rank 1 with other rows in --data", targs(model, os.path.join(d, "o2")),
              "rank 1 of 2 has other training rows", wrapper=wrap, env={"SRC": other, "DST": ct.ALPACA})
    # rank 1 cannot write --out (read-only there)
    o3 = os.path.join(d, "o3")
    os.makedirs(o3)
    ok &= bad(d, "rank 1 cannot write --out", targs(model, o3), "rank 1 of 2: --out " + o3 + " is not writable",
              wrapper=wrap, env={"SRC": o3, "DST": o3, "RO": "1"})
    # a checkpoint with a shard missing
    o4 = os.path.join(d, "o4")
    must(mpi(2, targs(model, o4, "--zero1", "--save-every", "2", "--max-steps", "4")), "2-rank run")
    for sub in ("final", "final-ema", "final-ema-0.5"):
        shutil.rmtree(os.path.join(o4, sub))
    ck = os.path.join(o4, "checkpoints", "step-00000004")
    os.remove(os.path.join(ck, "optim_v.bin"))
    ok &= bad(d, "--resume of a checkpoint without optim_v.bin",
              targs(model, o4, "--zero1", "--max-steps", "6", "--resume", ck),
              "--resume: rank 0 of 2: " + os.path.join(ck, "optim_v.bin") + ": listed in MANIFEST but cannot be opened")
    # --resume auto: rank 1 sees an empty checkpoints folder (not a shared --out)
    empty = os.path.join(d, "empty")
    os.makedirs(empty)
    ok &= bad(d, "--resume auto, rank 1 without the checkpoints",
              targs(model, o4, "--zero1", "--max-steps", "6", "--resume", "auto"), "found one on some ranks only",
              wrapper=wrap, env={"SRC": empty, "DST": os.path.join(o4, "checkpoints")})
    ok &= bad(d, "eval under mpirun -np 2", ["eval", "safety", "--help"], "runs in one process")
    return ok


def case_study():
    """`mpirun -np 2 safetune study --fake` (the deterministic fake hooks, 12 runs) against the
    one-process study: results.csv byte-identical, report.md identical before its cost section;
    both ranks took runs; a rank that dies mid-study (--fake-stop-after: exit 9) ends the job, and
    the restarted 2-rank study resumes it to the same results.csv."""
    if not MPIRUN:
        ct.skip("mpirun absent (scripts/install_deps.sh installs openmpi-bin)")
    work = ct.fresh("mpi_study")
    open(os.path.join(work, "model.gguf"), "w").write("GGUF")
    json.dump([{"instruction": "hi", "input": "", "output": "hello"}], open(os.path.join(work, "train.json"), "w"))
    cfg = {"model": os.path.join(work, "model.gguf"), "data_dir": work,
           "datasets": [{"path": "train.json", "format": "alpaca", "name": "toy"}],
           "lr": [1e-5, 3e-5, 1e-4], "batch_size": [2, 8], "max_steps": [30], "ema_decay": ["none", 0.9],
           "seed": [1, 2], "probe": {"every": 10}, "report": {"plots": False, "utility_tolerance": 0.05}}
    path = os.path.join(work, "study.json")
    json.dump(cfg, open(path, "w"))
    one_out, two_out, killed = (os.path.join(work, x) for x in ("one", "two", "killed"))
    must(one(["study", "--config", path, "--out", one_out, "--fake"]), "1-process study")
    ENV["SAFETUNE_MPI_ALL_STDERR"] = "1"
    try:
        r = mpi(2, ["study", "--config", path, "--out", two_out, "--fake"])
    finally:
        ENV.pop("SAFETUNE_MPI_ALL_STDERR")
    must(r, "2-rank study")
    took = [sum(f"training (rank {k})" in l for l in r.stderr.splitlines()) for k in (0, 1)]
    read = lambda d, f: open(os.path.join(d, f), "rb").read()
    cut = lambda d: read(d, "report.md").split(b"## Cost of the search")[0]
    same = read(one_out, "results.csv") == read(two_out, "results.csv") and cut(one_out) == cut(two_out)
    print(f"2-rank study: runs trained per rank {took}; results.csv byte-identical and report.md identical "
          f"(before its cost section) to the 1-process study: {same}; 'study done' printed once: "
          f"{r.stdout.count('study done:') == 1}")
    ok = same and min(took) >= 1 and sum(took) == 12 and r.stdout.count("study done:") == 1
    r = mpi(2, ["study", "--config", path, "--out", killed, "--fake", "--fake-stop-after", "3"])
    done = sum(os.path.exists(os.path.join(killed, "runs", d, "done")) for d in os.listdir(os.path.join(killed, "runs")))
    print(f"a rank exits (--fake-stop-after 3) mid-study: mpirun exit {r.returncode}, {done} of 12 runs finished")
    r = mpi(2, ["study", "--config", path, "--out", killed, "--fake"])
    same = r.returncode == 0 and read(one_out, "results.csv") == read(killed, "results.csv")
    print(f"restarted 2-rank study: {r.stdout.strip().splitlines()[0] if r.stdout.strip() else r.stderr}; "
          f"results.csv byte-identical: {same}")
    resumed = "resumed" in r.stdout
    # rank 1 reads a config with another lr list: the message names the key and both values
    other = os.path.join(work, "study_other.json")
    json.dump(dict(cfg, lr=[1e-5, 3e-5]), open(other, "w"))
    wrap = os.path.join(work, "cfg.sh")
    open(wrap, "w").write('#!/bin/sh\nif [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then\n'
                          f'  cmd=$1; shift; exec "$cmd" study --config {other} --out {os.path.join(work, "differ")} --fake\n'
                          'fi\nexec "$@"\n')
    r = mpi(2, ["study", "--config", path, "--out", os.path.join(work, "differ"), "--fake"], wrap)
    msg = "rank 1 of 2: key 'lr' is [1e-05,3e-05] here but [1e-05,3e-05,0.0001] on rank 0"
    differ = r.returncode != 0 and sum(msg in l for l in r.stderr.splitlines()) == 1
    print(f"rank 1 with another study config: exit {r.returncode}: "
          f"{next((l for l in r.stderr.splitlines() if 'rank 1 of 2' in l), r.stderr)} -> {'ok' if differ else 'FAIL'}")
    return ok and same and done < 12 and resumed and differ


if __name__ == "__main__":
    case = sys.argv[1] if len(sys.argv) > 1 else ""
    fn = {"dp": case_dp, "kill": case_kill, "bad": case_bad, "study": case_study}.get(case)
    if not fn:
        print(__doc__)
        sys.exit(2)
    ok = fn()
    print("->", "ok" if ok else "FAIL")
    ct.scratch.finish(ok)
