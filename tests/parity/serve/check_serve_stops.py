#!/usr/bin/env python3
"""`safetune serve --stop-id N` and `--stop TEXT` (the server's own stops, for every request) end a
reply exactly where `safetune generate` with the same flags ends it: greedy, same model, same chat
prompt; the reference is generate's output (its completion_ids pick the stop id and the stop text).
Also: a --stop-id outside the vocabulary is a usage error (exit 2) naming the flag.

usage: check_serve_stops.py SAFETUNE_EXE MODEL WORKDIR"""
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from serve_util import Serve  # noqa: E402

exe, model, work = sys.argv[1:4]
if not os.path.exists(model):
    print("SKIP: model missing:", model)
    sys.exit(77)
shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)
PROMPT = "What is the capital of France? Answer in one sentence."
fails = []


def generate(extra):
    out = os.path.join(work, "g.jsonl")
    r = subprocess.run([exe, "generate", "--model", model, "--prompt", PROMPT, "--chat", "--max-new-tokens", "16",
                        "--include-ids", "--quiet", "--output", out, *extra], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        print("FAIL: generate", extra, r.stderr)
        sys.exit(1)
    with open(out) as f:
        return json.loads(f.readline())


def serve(extra):
    with Serve(exe, ["--model", model, *extra], timeout=120) as s:
        st, body = s.post("/v1/chat/completions", {"messages": [{"role": "user", "content": PROMPT}],
                                                    "max_tokens": 16, "temperature": 0})
    if st != 200:
        print("FAIL: serve", extra, st, body)
        sys.exit(1)
    return body["choices"][0]["message"]["content"], body["choices"][0]["finish_reason"]


ref = generate([])
ids = ref["completion_ids"]
text, _ = serve([])
if text != ref["response"]:
    fails.append("without stops serve says %r, generate %r" % (text, ref["response"]))
if len(ids) < 5:
    print("FAIL: the reference reply is too short to pick a stop: %r" % ref)
    sys.exit(1)
# a stop id in the middle of the reply
sid = ids[3]
g = generate(["--stop-id", str(sid)])
text, fin = serve(["--stop-id", str(sid)])
if text != g["response"] or fin != "stop" or g["response"] == ref["response"]:
    fails.append("--stop-id %d: serve %r (%s), generate %r, plain %r" % (sid, text, fin, g["response"], ref["response"]))
# a stop text from the middle of the reply
resp = ref["response"]
stop = resp[len(resp) // 2: len(resp) // 2 + 3]
g = generate(["--stop", stop])
text, fin = serve(["--stop", stop])
if text != g["response"] or fin != "stop" or stop in text or len(text) >= len(resp):
    fails.append("--stop %r: serve %r (%s), generate %r, plain %r" % (stop, text, fin, g["response"], resp))
# an id outside the vocabulary: usage error before serving
r = subprocess.run([exe, "serve", "--model", model, "--port", "0", "--stop-id", "99999999"], capture_output=True,
                   text=True, timeout=120)
if r.returncode != 2 or "--stop-id" not in r.stderr:
    fails.append("--stop-id 99999999: exit %d, %r" % (r.returncode, r.stderr))
if fails:
    print("FAIL:\n  " + "\n  ".join(fails))
    sys.exit(1)
print("PASS: serve --stop-id %d and --stop %r end the reply where generate does (%r)" % (sid, stop, text))
