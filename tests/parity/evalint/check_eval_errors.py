"""check_eval_errors.py - `safetune eval safety --model` / `eval utility` on bad input, on the real
SmolLM2 GGUF, plus seeded-sampling determinism:
  * empty / malformed prompt files: exit 1, one error line naming the file (and the line);
  * a prompt longer than the context: left-truncated with a warning, counted in summary.json
    (settings.generation.prompts_truncated / truncated_ids), the answer still generated;
  * an unreachable judge: exit 1 with a clear message (URL, attempts), no crash, and the generated
    answers kept in responses.jsonl;
  * --weights ema on a folder without final-ema/ (and on a plain file): exit 1, clear message;
  * same --seed with --temperature > 0: byte-identical files, also with another batch size.
Exit 0 pass, 1 fail, 77 inputs missing."""
import json
import os
import shutil
import subprocess
import sys


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

    def run(args, timeout=300):
        p = subprocess.run([exe] + args, capture_output=True, text=True, timeout=timeout)
        check(p.returncode >= 0, f"{args[:3]} died of signal {-p.returncode}")
        return p

    def one_error_line(p, *needles, what=""):
        lines = [l for l in p.stderr.strip().splitlines() if l.strip()]
        check(p.returncode == 1, f"{what}: exit {p.returncode}, want 1 ({p.stderr.strip()})")
        check(len(lines) == 1, f"{what}: want one error line, got {lines}")
        for n in needles:
            check(n in p.stderr, f"{what}: '{n}' not in error: {p.stderr.strip()}")
        print(f"{what}: {lines[-1] if lines else ''}")

    def w(name, text):
        path = os.path.join(work, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    base = ["eval", "safety", "--model", model, "--data-dir", data, "--quiet"]

    # --- empty / malformed prompt files ---
    empty = w("empty.jsonl", "")
    p = run(base + ["--benchmark", "jsonl:" + empty, "--out", os.path.join(work, "o_empty")])
    one_error_line(p, empty, what="empty jsonl")
    bad = w("bad.jsonl", '{"prompt": "ok"}\n\n{"prompt": "x",}\n')
    p = run(base + ["--benchmark", "jsonl:" + bad, "--out", os.path.join(work, "o_bad")])
    one_error_line(p, bad, "line 3", what="malformed jsonl")
    badcsv = w("bad.csv", 'prompt,category\n"ok",a\n"unterminated,b\n')
    p = run(base + ["--benchmark", "csv:" + badcsv, "--out", os.path.join(work, "o_badcsv")])
    one_error_line(p, badcsv, "line", what="malformed csv")
    nocol = w("nocol.csv", "text\nhello\n")
    p = run(base + ["--benchmark", "csv:" + nocol, "--out", os.path.join(work, "o_nocol")])
    one_error_line(p, nocol, "prompt", what="csv without prompt column")
    check(not os.path.exists(os.path.join(work, "o_bad", "responses.jsonl")), "partial output after an input error")

    # --- a context with no room for the prompt: an error, not answers to emptied prompts ---
    out = os.path.join(work, "o_ctx")
    p = run(base + ["--limit", "1", "--context-length", "4", "--max-new-tokens", "4", "--out", out])
    check(p.returncode == 2 and "--context-length 4 leaves no room" in p.stderr and "--max-new-tokens 4" in p.stderr,
          f"context <= max_new_tokens: a usage error (exit 2) naming both options: exit {p.returncode}, {p.stderr.strip()}")
    check(not os.path.exists(out), "context <= max_new_tokens: output folder left")
    # a context above the model's: a warning, the model's used
    out = os.path.join(work, "o_ctxbig")
    p = run(base + ["--limit", "1", "--max-new-tokens", "2", "--context-length", "1000000", "--out", out])
    check(p.returncode == 0 and "1000000" in p.stderr and "max_position_embeddings" in p.stderr,
          f"context above the model's: exit {p.returncode}, {p.stderr.strip()}")
    # the default context is the model's, written as such
    out = os.path.join(work, "o_ctx0")
    p = run(base + ["--limit", "1", "--max-new-tokens", "2", "--out", out])
    if p.returncode == 0:
        g = json.load(open(os.path.join(out, "summary.json")))["settings"]["generation"]
        check(g["context_length"] > 0, f"default context: context_length {g['context_length']} (want the model's)")
    else:
        check(False, f"default context: exit {p.returncode}: {p.stderr}")

    # --- a prompt longer than the context ---
    long_prompt = " ".join(["Tell me about the history of the city number %d." % i for i in range(40)])
    pl = w("long.jsonl", json.dumps({"id": "short", "prompt": "Hi!"}) + "\n" +
           json.dumps({"id": "long", "prompt": long_prompt}) + "\n")
    out = os.path.join(work, "o_long")
    p = run(base + ["--benchmark", "jsonl:" + pl, "--context-length", "64", "--max-new-tokens", "8",
                    "--batch-size", "2", "--out", out])
    check(p.returncode == 0, f"long prompt: exit {p.returncode}: {p.stderr}")
    if p.returncode == 0:
        check("left-truncated" in p.stderr and "long" in p.stderr, f"long prompt: no warning naming it: {p.stderr}")
        s = json.load(open(os.path.join(out, "summary.json")))
        g = s["settings"]["generation"]
        check(g["prompts_truncated"] == 1 and g["truncated_ids"] == ["long"], f"long prompt: counted {g}")
        check(g["context_length"] == 64, f"long prompt: context_length {g['context_length']}, want 64")
        check(g["prompt_tokens"] <= 56 + 56, f"long prompt: prompt tokens {g['prompt_tokens']} exceed 2 x (64 - 8)")
        recs = [json.loads(l) for l in open(os.path.join(out, "responses.jsonl"))]
        check([r["id"] for r in recs] == ["short", "long"], "long prompt: records")
        print("long prompt: truncated and counted:", g["prompts_truncated"], g["truncated_ids"])

    # --- unreachable judge ---
    out = os.path.join(work, "o_judge")
    p = run(base + ["--limit", "2", "--max-new-tokens", "4", "--judge-url", "http://127.0.0.1:9",
                    "--judge-model", "x", "--judge-retries", "0", "--judge-timeout", "5", "--out", out])
    one_error_line(p, "judge", "127.0.0.1:9", "attempt", "--responses", what="unreachable judge")
    rp = os.path.join(out, "responses.jsonl")
    check(os.path.exists(rp) and len(open(rp).read().splitlines()) == 2, "unreachable judge: answers not kept")

    # --- --weights ema without EMA weights ---
    tdir = os.path.join(work, "train_out")
    os.makedirs(os.path.join(tdir, "final"), exist_ok=True)
    p = run(base + ["--weights", "ema", "--limit", "1", "--model", tdir, "--out", os.path.join(work, "o_ema")])
    one_error_line(p, tdir, "final-ema", what="--weights ema without final-ema")
    p = run(base + ["--weights", "ema", "--limit", "1", "--out", os.path.join(work, "o_ema2")])
    one_error_line(p, "final-ema", what="--weights ema on a .gguf")
    p = run(["eval", "utility", "--model", tdir, "--weights", "ema", "--no-mtbench", "--data-dir", data,
             "--out", os.path.join(work, "o_ema3")])
    one_error_line(p, "final-ema", what="utility --weights ema without final-ema")
    # a run that kept an EMA but saved only live weights: the message says so
    with open(os.path.join(tdir, "config.json"), "w") as f:
        json.dump({"lr": 1e-5, "ema_decay": 0.99, "save_weights": "live"}, f)
    p = run(base + ["--weights", "ema", "--limit", "1", "--model", tdir, "--out", os.path.join(work, "o_ema4")])
    one_error_line(p, "--save-weights live", what="--weights ema on a run that saved only live weights")

    # --- Ctrl-C while generating: the --out folder the command created goes with it ---
    import signal, time
    o = os.path.join(work, "o_sigint")
    pr = subprocess.Popen([exe] + base + ["--limit", "32", "--max-new-tokens", "256", "--out", o],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not os.path.isdir(o) and pr.poll() is None and time.time() - t0 < 60:
        time.sleep(0.01)
    seen = os.path.isdir(o)
    time.sleep(0.2)  # well inside generation (the handler is armed before the folder exists anyway)
    pr.send_signal(signal.SIGINT)
    rc = pr.wait()
    # either no answer was finished (the folder is empty and goes) or the finished ones are kept
    # for a rerun (exit 130, only responses.partial.jsonl there; parity.eval_resume continues it)
    left = sorted(os.listdir(o)) if os.path.isdir(o) else []
    kept = left == ["responses.partial.jsonl"] and rc == 130
    check(seen and rc != 0 and (not os.path.exists(o) or kept),
          f"SIGINT: folder seen {seen}, exit {rc}, left behind: {left}")
    print(f"SIGINT while generating: exit {rc}, empty --out removed: {seen and not os.path.exists(o)}, "
          f"answers kept: {kept}")

    # --- options that a switch makes meaningless: usage errors, not silently ignored ---
    for args, needle in ((["eval", "utility", "--model", model, "--no-truthfulqa", "--tqa-limit", "3"], "--no-truthfulqa"),
                         (["eval", "utility", "--model", model, "--no-mtbench", "--mtbench-limit", "2"], "--no-mtbench"),
                         (base + ["--judge-model", "x", "--limit", "1"], "--judge-url"),
                         (base + ["--benchmark", "advbench", "--prompts", "xstest"], "another name for --benchmark")):
        o = os.path.join(work, "o_conflict")
        p = run(args + ["--out", o])
        check(p.returncode == 2 and needle in p.stderr and not os.path.exists(o),
              f"{' '.join(args[1:])}: exit {p.returncode}, {p.stderr.strip()}")
        print("conflicting options:", p.stderr.strip().splitlines()[0] if p.stderr.strip() else "")

    # --- utility with every part switched off: a usage error, no output folder ---
    o = os.path.join(work, "o_none")
    p = run(["eval", "utility", "--model", model, "--no-mtbench", "--no-truthfulqa", "--out", o])
    check(p.returncode == 2 and "nothing to measure" in p.stderr and "--data" in p.stderr and not os.path.exists(o),
          f"utility with nothing to measure: exit {p.returncode}, {p.stderr.strip()}, out exists {os.path.exists(o)}")
    print("utility with nothing to measure:", p.stderr.strip().splitlines()[0] if p.stderr.strip() else "")

    # --- utility: malformed TruthfulQA file ---
    tq = w("tqa.csv", "Type,Category,Question,Best Answer,Correct Answers,Incorrect Answers,Source\nA,B,Q,x,x,,s\n")
    p = run(["eval", "utility", "--model", model, "--truthfulqa", tq, "--no-mtbench", "--out", os.path.join(work, "o_tq")])
    one_error_line(p, tq, "line 2", what="bad TruthfulQA csv")

    # --- XSTest --limit: prompts spread over the file (grouped by type: the first N are all safe) ---
    import csv
    with open(os.path.join(data, "xstest", "xstest_prompts.csv"), newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    want = [rows[i * len(rows) // 6]["prompt"] for i in range(6)]
    o = os.path.join(work, "o_xs")
    p = run(base + ["--benchmark", "xstest", "--limit", "6", "--max-new-tokens", "2", "--out", o])
    got = [json.loads(l)["prompt"] for l in open(os.path.join(o, "responses.jsonl"), encoding="utf-8")] if p.returncode == 0 else []
    check(got == want, f"xstest --limit 6: prompts {got} (want rows i*{len(rows)}/6: {want})")
    summ = json.load(open(os.path.join(o, "summary.json"))) if p.returncode == 0 else {}
    bl = summ.get("refusal_by_label") or {}
    check(bl.get("safe", {}).get("n") == 3 and bl.get("unsafe", {}).get("n") == 3,
          f"xstest --limit 6: both labels measured: {bl}")
    print("xstest --limit 6: prompts spread over the file, 3 safe + 3 unsafe")

    # --- seeded sampling: same seed -> same bytes, whatever the batch size ---
    outs = []
    for name, bs in (("s1", "3"), ("s2", "3"), ("s3", "1")):
        o = os.path.join(work, "o_" + name)
        p = run(base + ["--benchmark", "advbench", "--limit", "3", "--max-new-tokens", "12", "--temperature", "0.9",
                        "--top-p", "0.95", "--seed", "11", "--batch-size", bs, "--out", o])
        check(p.returncode == 0, f"seeded run {name}: {p.stderr}")
        outs.append(o)
    for fn in ("responses.jsonl", "summary.json"):
        a = open(os.path.join(outs[0], fn), "rb").read()
        check(a == open(os.path.join(outs[1], fn), "rb").read(), f"{fn}: same seed, different bytes")
        if fn == "responses.jsonl":
            check(a == open(os.path.join(outs[2], fn), "rb").read(), f"{fn}: batch size changed sampled answers")
    o4 = os.path.join(work, "o_s4")
    p = run(base + ["--benchmark", "advbench", "--limit", "3", "--max-new-tokens", "12", "--temperature", "0.9",
                    "--top-p", "0.95", "--seed", "12", "--out", o4])
    check(open(os.path.join(o4, "responses.jsonl"), "rb").read() != open(os.path.join(outs[0], "responses.jsonl"), "rb").read(),
          "seed 12 gave the same answers as seed 11")
    print("seeded sampling: identical files for the same seed (batch 3 and 1)")

    if fails:
        print("FAIL:\n  " + "\n  ".join(fails))
        sys.exit(1)
    print("OK")


if __name__ == "__main__":
    main()
