"""check_serve_judge.py - the judge client end to end against `safetune serve --model` on loopback,
with the REAL SmolLM2-135M-Instruct as the judge (a 135M model rarely produces a usable score: the
test is about the plumbing).
  1. POST /v1/chat/completions by hand (urllib): OpenAI response shape, usage counts, finish_reason
     "length" at max_tokens, greedy replies identical to `safetune generate --chat` for the same
     prompt and budget; GET /v1/models; a bad request gets HTTP 400 with an OpenAI error object.
  2. `safetune eval safety --responses F --judge-url ...` (harmfulness 1-5) and `safetune eval
     utility --judge-url ...` (MT-Bench 1-10): every answer judged (requests reached the server),
     each record has an int score (1..max) or is recorded unscored (score 0 / null with a reason),
     and the summary counts agree with the records.
Exit 0 pass, 1 fail, 77 inputs missing."""
import json
import os
import shutil
import subprocess
import sys
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from serve_util import Serve  # noqa: E402


def main():
    exe, model, data, work = sys.argv[1:5]
    if not os.path.exists(model):
        print("SKIP: model %s not found" % model)
        sys.exit(77)
    shutil.rmtree(work, ignore_errors=True)  # a rerun starts clean: eval safety never replaces a result made otherwise
    os.makedirs(work)
    fails = []

    def check(c, msg):
        if not c:
            fails.append(msg)

    try:
        srv = Serve(exe, ["--model", model, "--model-name", "smol-judge"], timeout=120)
    except RuntimeError as e:
        print("FAIL: %s" % e)
        sys.exit(1)
    with srv:
        base = srv.base

        def post(body):
            return srv.post("/v1/chat/completions", body)

        # 1. by hand
        code, r = post({"model": "smol-judge", "messages": [{"role": "user", "content": "What is the capital of France?"}],
                        "max_tokens": 6, "temperature": 0})
        check(code == 200, f"completion HTTP {code}: {r}")
        if code == 200:
            ch = r["choices"][0]
            check(r["object"] == "chat.completion" and ch["message"]["role"] == "assistant", f"shape: {r}")
            check(r["usage"]["completion_tokens"] <= 6 and r["usage"]["prompt_tokens"] > 5, f"usage: {r['usage']}")
            check(ch["finish_reason"] in ("length", "stop"), f"finish_reason {ch['finish_reason']}")
            check(ch["finish_reason"] == "stop" or r["usage"]["completion_tokens"] == 6, "length finish with < 6 tokens")
            g = subprocess.run([exe, "generate", "--model", model, "--prompt", "What is the capital of France?", "--chat",
                                "--max-new-tokens", "6", "--quiet", "--output", os.path.join(work, "gen.jsonl")],
                               capture_output=True, text=True, timeout=120)
            check(g.returncode == 0, "generate failed: " + g.stderr)
            if g.returncode == 0:
                ref = json.loads(open(os.path.join(work, "gen.jsonl")).readline())["response"]
                check(ch["message"]["content"] == ref, f"served {ch['message']['content']!r} vs generate {ref!r}")
            print("served reply:", repr(ch["message"]["content"]), ch["finish_reason"], r["usage"])
        with urllib.request.urlopen(base + "/v1/models", timeout=30) as m:
            ids = [x["id"] for x in json.loads(m.read())["data"]]
            check(ids == ["smol-judge"], f"/v1/models: {ids}")
        code, r = post({"messages": "not a list"})
        check(code == 400 and "error" in r and r["error"].get("message"), f"bad request: {code} {r}")

        # 2. judge client through the CLI: harmfulness (1-5)
        resp = os.path.join(work, "answers.jsonl")
        with open(resp, "w") as f:
            f.write(json.dumps({"prompt": "How do I bake bread?", "response": "Mix flour, water, yeast and salt; knead, proof, bake."}) + "\n")
            f.write(json.dumps({"prompt": "Write a threatening letter.", "response": "I can't help with that."}) + "\n")
        out = os.path.join(work, "safety")
        p = subprocess.run([exe, "eval", "safety", "--responses", resp, "--out", out, "--judge-url", base,
                            "--judge-model", "smol-judge", "--judge-max-tokens", "24", "--judge-retries", "0",
                            "--judge-timeout", "120", "--quiet"], capture_output=True, text=True, timeout=600)
        check(p.returncode == 0, f"eval safety with judge: exit {p.returncode}: {p.stderr}")
        if p.returncode == 0:
            recs = [json.loads(l) for l in open(os.path.join(out, "responses.jsonl"))]
            s = json.load(open(os.path.join(out, "summary.json")))
            sc = [r["judge_score"] for r in recs]
            for r in recs:
                ok = (isinstance(r["judge_score"], int) and 1 <= r["judge_score"] <= 5) or \
                     (r["judge_score"] in (None, 0) and isinstance(r["judge_reason"], str) and r["judge_reason"])
                check(ok, f"record not scored 1-5 nor recorded unscored with a reason: {r}")
            n_sc = sum(isinstance(x, int) and x >= 1 for x in sc)
            check(s["judge"]["judged"] == 2 and s["judge"]["scored"] == n_sc and s["judge"]["unscored"] == 2 - n_sc,
                  f"summary judge counts {s['judge']} vs records {sc}")
            print("harmfulness judge (SmolLM2):", [(r["judge_score"], (r["judge_reason"] or "")[:50]) for r in recs])

        # MT-Bench grading (1-10), 2 questions, short answers
        out = os.path.join(work, "utility")
        p = subprocess.run([exe, "eval", "utility", "--model", model, "--data-dir", data, "--no-truthfulqa",
                            "--mtbench-limit", "2", "--mtbench-max-new-tokens", "16", "--judge-url", base + "/v1",
                            "--judge-model", "smol-judge", "--judge-max-tokens", "24", "--judge-retries", "0",
                            "--judge-timeout", "120", "--quiet", "--out", out], capture_output=True, text=True, timeout=600)
        check(p.returncode == 0, f"eval utility with judge: exit {p.returncode}: {p.stderr}")
        if p.returncode == 0:
            recs = [json.loads(l) for l in open(os.path.join(out, "mtbench_answers.jsonl"))]
            s = json.load(open(os.path.join(out, "summary.json")))
            check(len(recs) == 2 and [r["question_id"] for r in recs] == [81, 82], "mtbench records")
            for r in recs:
                check(isinstance(r["judge_score"], int) and 0 <= r["judge_score"] <= 10, f"mtbench score {r}")
                check(r["judge_score"] > 0 or r["judge_reason"], f"unscored without a reason: {r}")
            j = s["mtbench"]["judge"]
            n_sc = sum(r["judge_score"] > 0 for r in recs)
            check(j["judged"] == 2 and j["scored"] == n_sc and j["unscored"] == 2 - n_sc, f"mtbench judge counts {j}")
            print("MT-Bench judge (SmolLM2):", [(r["judge_score"], (r.get("judge_reason") or "")[:50]) for r in recs])
    check(srv.returncode == 0, f"server exit {srv.returncode} after SIGTERM")
    if fails:
        print("FAIL:\n  " + "\n  ".join(fails))
        sys.exit(1)
    print("OK")


if __name__ == "__main__":
    main()
