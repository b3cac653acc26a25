"""check_cli.py - CLI conventions of `safetune`, end to end, without a model.

exit codes: 0 success, 1 runtime error (bad file, failed run), 2 usage error (unknown option,
missing required option, bad option value); --version = project() version + git commit;
--help of every subcommand shows each option's default; `eval safety` console lines: XSTest-style
sets (every prompt labelled) print refusal rates and no ASR, empty denominators print "n/a";
folders that are not models are named; `serve --echo`: /v1/completions, "stop", 400 for
unsupported parameters. Expected values are computed here from the inputs (not from our output).
usage: check_cli.py SAFETUNE WORKDIR PROJECT_VERSION SOURCE_DIR"""
import json
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from serve_util import Serve  # noqa: E402

EXE, WORK, VERSION, SRC = sys.argv[1:5]
FAILS = []


def check(cond, what):
    print("%-4s %s" % ("ok" if cond else "FAIL", what))
    if not cond:
        FAILS.append(what)


def run(args, **kw):
    return subprocess.run([EXE] + args, capture_output=True, text=True, timeout=60, **kw)


def w(name, text):
    p = os.path.join(WORK, name)
    with open(p, "w", encoding="utf-8") as f:
        f.write(text)
    return p


shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)

# ---- --version ----
# the commit is the one built from: a commit of this repository (HEAD unless committed since)
g = subprocess.run(["git", "-C", SRC, "rev-parse", "--git-dir"], capture_output=True, text=True)
in_git = g.returncode == 0
for form in (["--version"], ["version"]):
    r = run(form)
    m = re.fullmatch(r"safetune (\S+) \(git (\S+)\)\n", r.stdout)
    built = m.group(2).split("-dirty")[0] if m else ""
    if in_git:
        known = re.fullmatch(r"[0-9a-f]{12}", built) and subprocess.run(
            ["git", "-C", SRC, "cat-file", "-e", built + "^{commit}"], capture_output=True).returncode == 0
    else:
        known = built == "unknown"
    check(r.returncode == 0 and m and m.group(1) == VERSION and known,
          "%s -> %r (want version %s and a commit of %s)" % (form[0], r.stdout, VERSION, SRC))

# ---- exit codes ----
good = w("good.jsonl", '{"prompt": "p1", "response": "I cannot help"}\n{"prompt": "p2", "response": "Sure"}\n')
badj = w("bad.jsonl", '{"prompt": "p1", "response": "x"}\n{"prompt": 3}\n')
gguf = w("fake.gguf", "not a gguf")
CASES = [  # (args, exit code, words in the first stderr line)
    ([], 2, ["usage"]),
    (["frobnicate"], 2, ["frobnicate"]),
    (["version", "x"], 2, ["'x'"]),
    (["eval"], 2, ["usage"]),
    (["eval", "nope"], 2, ["nope"]),
    # unknown option
    (["info", gguf, "--bogus"], 2, ["--bogus"]),
    (["generate", "--bogus"], 2, ["--bogus"]),
    (["chat", "--bogus"], 2, ["--bogus"]),
    (["eval", "safety", "--bogus"], 2, ["--bogus"]),
    (["eval", "utility", "--bogus"], 2, ["--bogus"]),
    (["serve", "--bogus"], 2, ["--bogus"]),
    (["train", "--bogus"], 2, ["--bogus"]),
    (["align", "--bogus"], 2, ["--bogus"]),
    (["study", "--bogus"], 2, ["--bogus"]),
    (["study", "--out"], 2, ["--out", "needs a value"]),
    # missing required option
    (["info"], 2, ["MODEL"]),
    (["generate", "--prompt", "x"], 2, ["--model"]),
    (["chat"], 2, ["--model"]),
    (["eval", "safety"], 2, ["--model", "--responses"]),
    (["eval", "utility"], 2, ["--model"]),
    (["serve"], 2, ["--model", "--echo"]),
    (["train", "--model", gguf], 2, ["--data", "--out"]),
    (["align", "--model", gguf], 2, ["--out"]),
    (["study", "--out", WORK], 2, ["--config", "--preset"]),
    # bad option value
    (["serve", "--echo", "--port", "70000"], 2, ["--port", "70000"]),
    (["serve", "--echo", "--host", "0.0.0.0"], 2, ["--host", "0.0.0.0"]),
    (["serve", "--model", gguf, "--weights", "mid"], 2, ["--weights", "mid"]),
    (["info", gguf, "--weights", "mid"], 2, ["--weights", "mid"]),
    (["generate", "--model", gguf, "--prompt", "x", "--top-p", "2"], 2, ["--top-p", "2"]),
    (["eval", "safety", "--model", gguf, "--benchmark", "advbnch"], 2, ["--benchmark", "advbnch"]),
    (["eval", "safety", "--model", gguf, "--weights", "mid"], 2, ["--weights", "mid"]),
    (["eval", "safety", "--model", gguf, "--temperature", "-1"], 2, ["--temperature", "-1"]),
    (["eval", "utility", "--model", gguf, "--data-format", "xml"], 2, ["--data-format", "xml"]),
    (["train", "--model", gguf, "--data", good, "--out", WORK, "--lr-schedule", "wavy"], 2, ["--lr-schedule", "wavy"]),
    (["train", "--model", gguf, "--data", good, "--out", WORK, "--batch-size", "0"], 2, ["--batch-size", "0"]),
    (["align", "--model", gguf, "--out", WORK, "--lr", "abc"], 2, ["--lr", "abc"]),
    (["study", "--preset", "quick", "--fake-stop-after", "x"], 2, ["--fake-stop-after", "x"]),
    (["study", "--preset", "huge", "--dry-run"], 2, ["--preset", "huge", "quick"]),
    (["generate", "--model", gguf, "--prompt", "x", "--output", WORK], 2, ["--output", "is a folder"]),
    (["generate", "--model", gguf, "--prompts", good, "--output", good], 2, ["--output", "--prompts file"]),
    (["eval", "safety", "--responses", good, "--limit", "1"], 2, ["--limit", "--responses"]),
    # train --config FILE: messages name the file, the key and the line (usage errors: 2)
    (["train", "--config", w("t_dup.json", '{"lr": 1e-4,\n "lr": 2e-4}'), "--model", gguf, "--data", good, "--out", WORK],
     2, ["t_dup.json: line 2: key 'lr' appears twice in one object (first on line 1)"]),
    (["train", "--config", w("t_unk.json", '{"max_step": 3}'), "--model", gguf, "--data", good, "--out", WORK],
     2, ["t_unk.json: unknown key 'max_step' (did you mean 'max_steps'?)"]),
    (["train", "--config", w("t_json.json", '{"lr": 1e-4,\n "max_steps": }'), "--model", gguf, "--data", good, "--out",
      WORK], 2, ["t_json.json: line 2, column 15: invalid JSON"]),
    (["train", "--config", w("t_val.json", '{"lr_schedule": "wavy"}'), "--model", gguf, "--data", good, "--out", WORK],
     2, ["t_val.json: key 'lr_schedule':", "'wavy'"]),
    (["train", "--config", w("t_val2.json", '{"lr_schedule": "wavy"}'), "--model", gguf, "--data", good, "--out", WORK,
      "--lr-schedule", "cosine", "--batch-size", "0"], 2, ["--batch-size", "0"]),
    (["train", "--model", gguf, "--data", good, "--out", WORK, "--max-step", "3"], 2, ["'--max-step'", "--max-steps"]),
    # the same mistakes in a study config: exit 2 too
    (["study", "--config", w("s_dup.json", '{"lr": [1e-4],\n "lr": [2e-4]}'), "--dry-run"], 2,
     ["s_dup.json: line 2: key 'lr' appears twice in one object (first on line 1)"]),
    (["study", "--config", w("s_json.json", '{"lr": [1e-4,\n ]}'), "--dry-run"], 2, ["s_json.json: line 2, column 2: invalid JSON"]),
    # runtime errors: bad or missing files
    (["info", os.path.join(WORK, "missing.gguf")], 1, ["missing.gguf", "no such file"]),
    (["info", gguf], 1, ["fake.gguf"]),
    (["eval", "safety", "--responses", os.path.join(WORK, "missing.jsonl"), "--out", os.path.join(WORK, "o")], 1,
     ["missing.jsonl"]),
    (["eval", "safety", "--responses", badj, "--out", os.path.join(WORK, "o")], 1, ["bad.jsonl", "line 2"]),
    (["study", "--config", os.path.join(WORK, "missing.json"), "--dry-run"], 1, ["missing.json"]),
]
for args, rc, words in CASES:
    r = run(args)
    first = r.stderr.strip().splitlines()[0] if r.stderr.strip() else ""
    ok = r.returncode == rc and all(x in first for x in words) and "Sanitizer" not in r.stderr
    check(ok, "%s -> exit %d (want %d): %r" % (" ".join(args) or "(no args)", r.returncode, rc, first))
r = run(["eval", "safety", "--responses", good, "--out", os.path.join(WORK, "o_good"), "--quiet"])
check(r.returncode == 0, "eval safety on a good file -> exit %d" % r.returncode)
# a failed eval leaves no output folder behind (the runtime-error cases above used WORK/o)
check(not os.path.exists(os.path.join(WORK, "o")), "a failed eval safety left its --out folder")
r = run(["eval", "utility", "--model", gguf, "--out", os.path.join(WORK, "o_util")])
check(r.returncode == 1 and not os.path.exists(os.path.join(WORK, "o_util")), "a failed eval utility left its --out folder")

# a failed train leaves no --out folder it created; a missing --resume folder fails before any loading
r = run(["train", "--model", gguf, "--data", good, "--out", os.path.join(WORK, "o_train"), "--max-steps", "1",
         "--resume", os.path.join(WORK, "no-such-step")])
first = r.stderr.strip().splitlines()[0] if r.stderr.strip() else ""
check(r.returncode == 1 and "--resume" in first and "no-such-step" in first and "no such checkpoint folder" in first
      and not os.path.exists(os.path.join(WORK, "o_train")), "train --resume MISSING -> exit %d: %r" % (r.returncode, first))
r = run(["train", "--model", gguf, "--data", good, "--out", os.path.join(WORK, "o_train"), "--max-steps", "1"])
check(r.returncode == 1 and not os.path.exists(os.path.join(WORK, "o_train")),
      "a failed train (bad model) left its --out folder (exit %d)" % r.returncode)

# generate/chat --weights ema on a training output folder without final-ema/: exit 1 naming it
tdir = os.path.join(WORK, "train_out")
os.makedirs(os.path.join(tdir, "final"), exist_ok=True)
for cmd in (["generate", "--prompt", "hi"], ["chat"]):
    r = run(cmd + ["--model", tdir, "--weights", "ema"], input="")
    first = r.stderr.strip().splitlines()[0] if r.stderr.strip() else ""
    check(r.returncode == 1 and tdir in first and "final-ema" in first,
          "%s --weights ema without final-ema -> exit %d: %r" % (cmd[0], r.returncode, first))

# ---- --help of every subcommand: exit 0, each option's default ----
NO_DEFAULT = {"model", "prompt", "prompts", "output", "data", "out", "resume", "responses", "judge-url",
              "judge-model", "config", "preset", "base", "merge", "lora-init", "adapter"}
for cmd in (["info"], ["generate"], ["chat"], ["tokenize"], ["eval", "safety"], ["eval", "utility"], ["serve"],
            ["train"], ["align"], ["study"], ["merge"]):
    r = run(cmd + ["--help"])
    check(r.returncode == 0 and r.stdout.startswith("usage: safetune " + " ".join(cmd)), " ".join(cmd) + " --help: exit 0")
    lines = []  # one entry per option, with the help line below a long option joined to it
    for l in r.stdout.splitlines():
        if re.match(r"  --[a-z]", l):
            lines.append(l)
        elif lines and re.match(r"\s{20,}\S", l):
            lines[-1] += " " + l.strip()
    check(len(lines) >= 3, "%s --help lists options" % " ".join(cmd))
    for l in lines:
        m = re.match(r"  --([a-z0-9-]+)( \S+)?\s", l)
        name, takes_value = m.group(1), m.group(2) is not None
        if takes_value and name not in NO_DEFAULT and "default" not in l:
            check(False, "%s --help: --%s shows no default: %r" % (" ".join(cmd), name, l.strip()))
r = run(["train", "--help"])
check(re.search(r"--lr X .*\(default: 1e-05\)|--lr X .*default 1e-5", r.stdout) is not None, "train --help: lr default")
r = run(["serve", "--help"])
check("(default: 8080)" in r.stdout and "(default: 256)" in r.stdout, "serve --help: port and max-tokens defaults")
r = run(["study", "--help"])
check("--config FILE" in r.stdout and "JSON object of option values" not in r.stdout, "study --help: its own --config")

# ---- eval safety console lines ----
def console(rows, name):
    p = w(name + ".jsonl", "".join(json.dumps(o) + "\n" for o in rows))
    r = run(["eval", "safety", "--responses", p, "--out", os.path.join(WORK, name), "--quiet"])
    check(r.returncode == 0, name + ": exit 0")
    return r.stdout


def pct(k, n):
    return "%.2f%% (%d/%d)" % (100.0 * k / n, k, n)


REF, ANS = "I'm sorry, I can't", "Sure, here it is"
xs = [{"prompt": "q%d" % i, "response": REF if i % 3 == 0 else ANS, "label": "safe"} for i in range(9)]
xs += [{"prompt": "c%d" % i, "response": REF if i < 4 else ANS, "label": "unsafe"} for i in range(5)]
out = console(xs, "xstest")
check("ASR" not in out and "attack" not in out, "XSTest-style set: no ASR line: " + out.splitlines()[0])
check("safe prompts " + pct(3, 9) in out and "unsafe prompts " + pct(4, 5) in out,
      "XSTest-style set: refusal rates %s and %s printed" % (pct(3, 9), pct(4, 5)))
out = console(xs[:9], "xstest_safe_only")
check("unsafe prompts n/a (0 unsafe prompts)" in out and "unsafe prompts 0.00%" not in out,
      "no unsafe prompt: n/a, not 0%")
adv = [{"prompt": "h%d" % i, "response": REF if i < 2 else ANS} for i in range(8)]
out = console(adv, "advbench")
check(("ASR: " + pct(6, 8)) in out, "AdvBench-style set keeps its ASR line " + pct(6, 8))
mixed = adv + xs
out = console(mixed, "mixed")
# ASR over the 13 prompts not labelled safe (8 unlabelled, 5 unsafe): an answered safe prompt is no attack
check(("ASR (prompts not labelled safe): " + pct(6 + 1, 13)) in out and "safe prompts " + pct(3, 9) in out,
      "mixed set: ASR over prompts not labelled safe, and refusal rates: " + out.strip().replace("\n", " | "))

# ---- folders that are not models ----
ck = os.path.join(WORK, "run", "checkpoints", "step-00000003")
os.makedirs(ck)
for f in ("MANIFEST", "state.bin", "params.bin"):
    open(os.path.join(ck, f), "w").close()
st = os.path.join(WORK, "study")
os.makedirs(os.path.join(st, "runs", "r1", "ckpt"))
w("study/study.json", "{}")
w("study/runs/r1/train.json", "{}")
for path, words in ((ck, ["trainer checkpoint", "--resume"]),
                    (os.path.join(WORK, "run"), ["has not finished", "--resume auto"]),
                    (st, ["`safetune study` folder", "study.json"]),
                    (os.path.join(st, "runs", "r1"), ["run folder of `safetune study`"])):
    for cmd in (["info", path], ["generate", "--model", path, "--prompt", "x"]):
        r = run(cmd)
        first = r.stderr.strip().splitlines()[0] if r.stderr.strip() else ""
        check(r.returncode == 1 and all(x in first for x in words) and "unknown architecture" not in r.stderr,
              "%s on %s -> exit %d: %r" % (cmd[0], os.path.relpath(path, WORK), r.returncode, first[:120]))

# ---- serve --echo ----
with Serve(EXE, ["--echo"]) as srv:
    post = srv.post

    prompt = "alpha beta gamma delta"
    code, j = post("/v1/completions", {"model": "echo", "prompt": prompt, "stop": ["gamma", "beta g"]})
    want = prompt[:min(prompt.find("gamma"), prompt.find("beta g"))]
    check(code == 200 and j["object"] == "text_completion" and j["choices"][0]["text"] == want
          and j["choices"][0]["finish_reason"] == "stop", "/v1/completions with stop -> %r" % (j,))
    code, j = post("/v1/chat/completions", {"messages": [{"role": "user", "content": prompt}], "stop": "delta"})
    check(code == 200 and j["choices"][0]["message"]["content"] == prompt[:prompt.find("delta")]
          and j["choices"][0]["finish_reason"] == "stop", "/v1/chat/completions with stop")
    for path, extra, param in (("/v1/chat/completions", {"logprobs": True}, "logprobs"),
                               ("/v1/chat/completions", {"tools": [{"type": "function"}]}, "tools"),
                               ("/v1/chat/completions", {"n": 2}, "n"),
                               ("/v1/completions", {"best_of": 3}, "best_of")):
        body = {"messages": [{"role": "user", "content": "x"}]} if "chat" in path else {"prompt": "x"}
        body.update(extra)
        code, j = post(path, body)
        e = j.get("error", {})
        check(code == 400 and e.get("param") == param and e.get("type") == "invalid_request_error"
              and param in e.get("message", ""), "%s %s -> %d %s" % (path, extra, code, e.get("message")))

if FAILS:
    print("FAILED: %d check(s)" % len(FAILS))
    sys.exit(1)
print("OK")
