"""`safetune eval safety` stopped part-way keeps its answers and a rerun continues from them:
SIGINT, SIGTERM and SIGKILL after k answers are in OUT/responses.partial.jsonl (a torn last line,
as a kill during a write leaves it, is dropped), then the same command again: responses.jsonl and
summary.json byte-identical to an uninterrupted run's, greedy and sampled. And --out onto an earlier
result made with other settings (max_new_tokens, sampling, limit, the model's weights) is refused naming
the setting, leaving its files as they were; with the same settings a whole result is reported
complete. SmolLM2-135M-Instruct (Q4_1 GGUF) on AdvBench, a few prompts and tokens.
usage: check_eval_resume.py CLI WORKDIR   (exit 77 when the model or data is absent)"""
import json, os, shutil, signal, subprocess, sys, time

cli, work = sys.argv[1], sys.argv[2]
here = os.path.dirname(os.path.abspath(__file__))
data = os.environ.get("SAFETUNE_DATA_DIR") or os.path.join(here, "../../../data")
model_dir = os.environ.get("SAFETUNE_MODEL_DIR") or os.path.join(here, "../../../models")
model = os.path.join(model_dir, "SmolLM2-135M-Instruct.Q4_1.gguf")
if not (os.path.exists(model) and os.path.exists(os.path.join(data, "advbench", "harmful_behaviors.csv"))):
    print("SKIP: model or AdvBench absent:", model, data)
    sys.exit(77)
shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)
env = dict(os.environ, SAFETUNE_DATA_DIR=data)
N = 10
BASE = ["--limit", str(N), "--max-new-tokens", "20", "--batch-size", "3", "--quiet"]
fails = []


def check(cond, msg):
    print(("ok   " if cond else "FAIL ") + msg)
    if not cond:
        fails.append(msg)


def run(out, extra=(), m=model):
    return subprocess.run([cli, "eval", "safety", "--model", m, "--out", out] + BASE + list(extra),
                          capture_output=True, text=True, env=env, timeout=600)


def read(p):
    with open(p, "rb") as f:
        return f.read()


def answers(partial):
    """Whole answer lines in the partial file (header excluded)."""
    try:
        return max(0, read(partial).count(b"\n") - 1)
    except FileNotFoundError:
        return 0


def same_files(a, b, what):
    for name in ("responses.jsonl", "summary.json"):
        check(os.path.exists(os.path.join(b, name)) and read(os.path.join(a, name)) == read(os.path.join(b, name)),
              f"{what}: {name} byte-identical to the uninterrupted run's")
    check(not os.path.exists(os.path.join(b, "responses.partial.jsonl")), f"{what}: the partial file is gone")


def interrupt(out, sig, k, extra=()):
    """Start a run, send sig once k answers are saved; returns (rc, answers kept, stderr)."""
    partial = os.path.join(out, "responses.partial.jsonl")
    p = subprocess.Popen([cli, "eval", "safety", "--model", model, "--out", out] + BASE + list(extra),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    t0 = time.time()
    while answers(partial) < k and p.poll() is None and time.time() - t0 < 300:
        time.sleep(0.01)
    p.send_signal(sig)
    _, err = p.communicate(timeout=300)
    return p.returncode, answers(partial), err


# the uninterrupted references
full = os.path.join(work, "full")
r = run(full)
check(r.returncode == 0, f"uninterrupted run: exit 0 ({r.stderr.strip()[-300:]})")
full_s = os.path.join(work, "full_sampled")
SAMPLED = ["--temperature", "0.9", "--seed", "7"]
r = run(full_s, SAMPLED)
check(r.returncode == 0, "uninterrupted sampled run: exit 0")
if fails:
    sys.exit(1)
with open(os.path.join(full, "summary.json")) as f:
    settings = json.load(f)["settings"]
check(settings["generation"]["max_new_tokens"] == 20 and len(settings["model_hash"]) == 16,
      "summary.json settings name max_new_tokens and the model hash")

# SIGINT / SIGTERM: stop after the current step, keep what finished, exit 128 + signal
for sig, code, extra, ref in ((signal.SIGINT, 130, [], full), (signal.SIGTERM, 143, [], full),
                              (signal.SIGINT, 130, SAMPLED, full_s)):
    name = signal.Signals(sig).name + (" sampled" if extra else "")
    out = os.path.join(work, "int_" + name.replace(" ", "_"))
    rc, kept, err = interrupt(out, sig, 3, extra)
    check(rc == code, f"{name}: exit {code} (got {rc}: {err.strip()[-300:]})")
    check(3 <= kept < N, f"{name}: {kept} whole answers kept (3 <= kept < {N})")
    check("rerun the same command" in err, f"{name}: says how to continue")
    check(not os.path.exists(os.path.join(out, "summary.json")), f"{name}: no summary of an unfinished run")
    r = run(out, extra)
    check(r.returncode == 0, f"{name}: rerun exits 0 ({r.stderr.strip()[-300:]})")
    same_files(ref, out, name)

# SIGKILL: no chance to clean up; a torn last line (the kill hit a write) is dropped on resume
out = os.path.join(work, "kill")
rc, kept, err = interrupt(out, signal.SIGKILL, 3)
check(rc == -signal.SIGKILL, f"SIGKILL: killed (rc {rc})")
check(3 <= kept < N, f"SIGKILL: {kept} whole answers on disk")
partial = os.path.join(out, "responses.partial.jsonl")
body = read(partial)
check(body.endswith(b"\n"), "SIGKILL: every line on disk is whole")
last = body.rstrip(b"\n").rsplit(b"\n", 1)[-1]
with open(partial, "ab") as f:  # what a kill in the middle of a write leaves
    f.write(last[: len(last) // 2])
r = run(out)
check(r.returncode == 0, f"SIGKILL + torn line: rerun exits 0 ({r.stderr.strip()[-300:]})")
check("torn last line" in r.stderr, "SIGKILL + torn line: the torn line is reported and dropped")
same_files(full, out, "SIGKILL + torn line")

# a damaged line in the middle is an error naming the file and line, not silently dropped
out = os.path.join(work, "damaged")
rc, kept, _ = interrupt(out, signal.SIGKILL, 2)
partial = os.path.join(out, "responses.partial.jsonl")
lines = read(partial).split(b"\n")
lines[1] = b'{"index": 0, "garbage'
with open(partial, "wb") as f:
    f.write(b"\n".join(lines))
r = run(out)
check(r.returncode == 1 and "responses.partial.jsonl: line 2" in r.stderr,
      f"damaged middle line: refused naming file and line ({r.stderr.strip()[-200:]})")

# same settings, complete: nothing to do, files untouched
before = {n: (read(os.path.join(full, n)), os.stat(os.path.join(full, n)).st_mtime_ns)
          for n in ("responses.jsonl", "summary.json")}
r = run(full)
check(r.returncode == 0 and "complete" in r.stdout, f"same settings onto a whole result: complete ({r.stdout.strip()})")


def untouched(what):
    for n, (b, t) in before.items():
        p = os.path.join(full, n)
        check(read(p) == b and os.stat(p).st_mtime_ns == t, f"{what}: {n} left as it was")


untouched("complete")

# other settings onto a whole result: refused naming the setting
for extra, key in ((["--max-new-tokens", "8"], "generation.max_new_tokens"),
                   (["--temperature", "0.5"], "generation.decoding"),
                   (["--limit", "4"], "generation.limit"),
                   (["--precision", "bf16"], "generation.precision"),
                   (["--system-prompt", "Be brief."], "generation.system_prompt"),
                   (["--prefix-only"], "refusal_mode")):
    args = BASE.copy()
    if extra[0] in args:  # replace, not repeat, an option of BASE
        i = args.index(extra[0])
        args[i + 1] = extra[1]
        extra2 = []
    else:
        extra2 = extra
    p = subprocess.run([cli, "eval", "safety", "--model", model, "--out", full] + args + extra2,
                       capture_output=True, text=True, env=env, timeout=600)
    check(p.returncode == 1 and key in p.stderr and "other settings" in p.stderr,
          f"{' '.join(extra)} onto a whole result: refused naming {key} ({p.stderr.strip()[-200:]})")
untouched("refusals")

# another model file at the same path (weights changed): refused naming model_hash
mcopy = os.path.join(work, "model.gguf")
shutil.copyfile(model, mcopy)
out = os.path.join(work, "weights")
r = run(out, m=mcopy)
check(r.returncode == 0, "copy of the model: exit 0")
# the same file named another way (relative instead of absolute): the same result, complete
r = subprocess.run([cli, "eval", "safety", "--model", "model.gguf", "--out", out] + BASE,
                   capture_output=True, text=True, env=env, timeout=600, cwd=work)
check(r.returncode == 0 and "complete" in r.stderr + r.stdout,
      f"the same model by a relative path: accepted as the same result ({(r.stderr + r.stdout).strip()[-200:]})")
with open(mcopy, "r+b") as f:  # one byte of the last tensor's data (a Q4_1 quant pair)
    f.seek(-100, 2)
    b = f.read(1)
    f.seek(-100, 2)
    f.write(bytes([b[0] ^ 0x11]))
r = run(out, m=mcopy)
check(r.returncode == 1 and "model_hash" in r.stderr, f"changed weights: refused naming model_hash ({r.stderr.strip()[-200:]})")
r = run(out, m=model)  # the file the result was made from, by its first path: the same weights
check(r.returncode == 0 and "complete" in r.stdout,
      f"another path to the same weights (model_hash equal): the same result, complete ({r.stdout.strip()[-120:]})")

# an unfinished run with other settings: refused, its answers kept as they were
out = os.path.join(work, "int_SIGINT")
shutil.rmtree(out)
rc, kept, _ = interrupt(out, signal.SIGINT, 2)
partial = os.path.join(out, "responses.partial.jsonl")
pb = read(partial)
r = run(out, ["--top-p", "0.5"])
check(r.returncode == 1 and "unfinished run" in r.stderr and "generation.top_p" in r.stderr,
      f"unfinished run, other settings: refused naming top_p ({r.stderr.strip()[-200:]})")
check(read(partial) == pb, "unfinished run, other settings: its answers untouched")

# --responses onto a model run's result: refused; scoring OUT's own answers again is allowed
p = subprocess.run([cli, "eval", "safety", "--responses", os.path.join(full, "responses.jsonl"), "--out",
                    os.path.join(work, "weights"), "--quiet"], capture_output=True, text=True, env=env, timeout=60)
check(p.returncode == 1 and "responses" in p.stderr, "--responses onto a model result: refused")
p = subprocess.run([cli, "eval", "safety", "--responses", os.path.join(full, "responses.jsonl"), "--out", full,
                    "--quiet"], capture_output=True, text=True, env=env, timeout=60)
check(p.returncode == 0, f"--responses OUT/responses.jsonl --out OUT: scored again ({p.stderr.strip()[-200:]})")

if fails:
    print(f"FAIL: {len(fails)} check(s)")
    sys.exit(1)
print("PASS: eval safety resume")
