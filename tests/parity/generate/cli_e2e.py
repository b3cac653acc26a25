"""cli_e2e.py - end-to-end checks of `safetune info`, `generate` and `chat` on the real model.

info: config/parameter count/tensor count against gguf-py's reading of the same file;
generate: JSONL valid and deterministic for a fixed seed (sampling), different for another seed;
chat: piped stdin, multi-turn, /reset, /quit; bad input: non-zero exit and a clear message.
Exit 0 = pass, 1 = fail, 77 = model missing (skip)."""
import argparse
import json
import os
import subprocess
import sys

FAILS = []


def check(cond, what):
    print("%-4s %s" % ("ok" if cond else "FAIL", what))
    if not cond:
        FAILS.append(what)


def run(args, stdin=None):
    return subprocess.run([EXE] + args, capture_output=True, text=True, input=stdin, timeout=300)


def expect_error(args, words, rc_want=None, what=None):
    r = run(args)
    first = r.stderr.strip().splitlines()[0] if r.stderr.strip() else ""
    good = r.returncode != 0 and (rc_want is None or r.returncode == rc_want) and all(w in first for w in words)
    good = good and r.stdout == "" and "Sanitizer" not in r.stderr
    check(good, "%s -> rc %d, %r" % (what or " ".join(args), r.returncode, first))


def main():
    global EXE
    ap = argparse.ArgumentParser()
    ap.add_argument("--safetune", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--workdir", required=True)
    a = ap.parse_args()
    EXE = a.safetune
    os.makedirs(a.workdir, exist_ok=True)
    W = lambda n: os.path.join(a.workdir, n)  # noqa: E731

    # ---- bad input (no model needed) ----
    expect_error(["generate", "--model", W("nope.gguf"), "--prompt", "hi"], ["nope.gguf", "no such file"])
    os.makedirs(W("emptydir"), exist_ok=True)
    expect_error(["info", W("emptydir")], ["emptydir"], what="info on a folder without config.json")
    expect_error(["generate", "--model", W("emptydir"), "--prompt", "hi"], ["emptydir"],
                 what="generate on a folder without config.json")
    for opt, val, word in (("--max-new-tokens", "0", "max-new-tokens"), ("--temperature", "-1", "temperature"),
                           ("--top-p", "1.5", "top-p"), ("--batch-size", "abc", "batch-size"),
                           ("--top-k", "-3", "top-k"), ("--seed", "x", "seed")):
        expect_error(["generate", "--model", a.model, "--prompt", "hi", opt, val], [word], 2)
    expect_error(["generate", "--model", a.model, "--prompt", "hi", "--bogus", "1"], ["--bogus"], 2)
    expect_error(["generate", "--model", a.model], ["--prompt"], 2, "generate without a prompt")
    expect_error(["generate", "--prompt", "x"], ["--model"], 2, "generate without --model")
    open(W("empty.txt"), "w").close()
    expect_error(["generate", "--model", a.model, "--prompts", W("empty.txt")], ["empty.txt", "no prompts"])
    with open(W("bad.jsonl"), "w") as f:
        f.write('{"prompt": "ok"}\n{"prompt": 3}\n')
    expect_error(["generate", "--model", a.model, "--prompts", W("bad.jsonl")], ["bad.jsonl", "line 2"])
    expect_error(["generate", "--model", a.model, "--prompts", W("missing.txt")], ["missing.txt"])
    expect_error(["info"], ["MODEL"], 2, "info without MODEL")
    expect_error(["frobnicate"], ["frobnicate"], 2)
    with open(W("cfg.json"), "w") as f:
        f.write('{"max_new_tokens": "many"}')
    expect_error(["generate", "--config", W("cfg.json"), "--model", a.model, "--prompt", "x"],
                 ["cfg.json", "max_new_tokens"], 2)

    if not os.path.exists(a.model):
        print("SKIP: model %s not found (bad-input checks above: %s)" % (a.model, "FAIL" if FAILS else "ok"))
        sys.exit(1 if FAILS else 77)

    # ---- info ----
    import gguf
    rd = gguf.GGUFReader(a.model)
    f = lambda k: rd.fields[k].contents()  # noqa: E731
    r = run(["info", a.model, "--json"])
    check(r.returncode == 0, "info --json exits 0")
    info = json.loads(r.stdout)
    c = info["config"]
    want = {"hidden_size": f("llama.embedding_length"), "intermediate_size": f("llama.feed_forward_length"),
            "num_hidden_layers": f("llama.block_count"), "num_attention_heads": f("llama.attention.head_count"),
            "num_key_value_heads": f("llama.attention.head_count_kv"), "vocab_size": len(f("tokenizer.ggml.tokens")),
            "max_position_embeddings": f("llama.context_length"), "rope_theta": f("llama.rope.freq_base"),
            "tie_word_embeddings": "output.weight" not in [t.name for t in rd.tensors]}
    for k, v in want.items():
        check(k in c and abs(float(c[k]) - float(v)) <= 1e-6 * abs(float(v)), "info config %s = %s (want %s)" % (k, c.get(k), v))
    check(abs(c.get("rms_norm_eps", 0) - 1e-5) < 1e-9, "info config rms_norm_eps = %s" % c.get("rms_norm_eps"))
    n_params = sum(int(t.n_elements) for t in rd.tensors)
    check(info["parameters"] == n_params, "parameters %s (want %d)" % (info["parameters"], n_params))
    check(len(info["tensors"]) == len(rd.tensors), "tensor table has %d rows" % len(info["tensors"]))
    t0 = {t["name"]: t for t in info["tensors"]}
    for t in rd.tensors:
        row = t0.get(t.name)
        good = row and row["type"] == t.tensor_type.name and row["shape"] == [int(x) for x in reversed(t.shape)]
        if not good:
            check(False, "tensor %s: %s vs %s %s" % (t.name, row, t.tensor_type.name, list(reversed(t.shape))))
            break
    else:
        check(True, "tensor names, shapes and types match gguf-py")
    tk = info["tokenizer"]
    check(tk["vocab_size"] == 49152 and tk["bos"]["id"] == f("tokenizer.ggml.bos_token_id")
          and tk["eos"]["id"] == f("tokenizer.ggml.eos_token_id"), "tokenizer vocab/bos/eos %s" % tk)
    ch = info["chat_template"]
    check(ch["kind"] == "chatml" and ch["default_system_prompt"] ==
          "You are a helpful AI assistant named SmolLM, trained by Hugging Face", "chat template %s" % ch)
    r = run(["info", a.model])
    check(r.returncode == 0 and "hidden_size" in r.stdout and "576" in r.stdout and "parameters:" in r.stdout
          and "chatml" in r.stdout and "blk.0.attn_q.weight" in r.stdout, "info human output")

    # ---- generate: deterministic JSONL with a fixed seed ----
    with open(W("p.txt"), "w") as fp:
        fp.write("Tell me a joke.\n\nName a color.\nWhat is 2+2?\n")
    outs = []
    for i, seed in enumerate(("7", "7", "8")):
        o = W("s%d.jsonl" % i)
        r = run(["generate", "--model", a.model, "--prompts", W("p.txt"), "--chat", "--max-new-tokens", "24",
                 "--temperature", "0.9", "--top-p", "0.95", "--top-k", "50", "--seed", seed, "--batch-size",
                 "2" if i == 1 else "32", "--output", o])
        check(r.returncode == 0 and r.stdout == "", "generate sampling seed %s exits 0 (%s)" % (seed, r.stderr.strip()[-200:]))
        with open(o) as fo:
            recs = [json.loads(x) for x in fo]
        check(len(recs) == 3 and [x["id"] for x in recs] == ["0", "1", "2"] and
              all(set(x) >= {"id", "prompt", "response", "finish_reason", "tokens"} for x in recs),
              "JSONL records valid (seed %s)" % seed)
        outs.append([x["response"] for x in recs])
    check(outs[0] == outs[1], "same seed, different batch size -> identical responses")
    check(outs[0] != outs[2], "different seed -> different responses")
    r = run(["generate", "--model", a.model, "--prompt", "What is 2+2?", "--chat", "--max-new-tokens", "16"])
    check(r.returncode == 0 and len(r.stdout.strip()) > 0 and "completion tokens" in r.stdout, "generate human output")
    with open(W("ids.jsonl"), "w") as fp:
        fp.write('{"id": "a-1", "prompt": "Hello"}\n{"prompt": "Bye", "id": 42}\n')
    r = run(["generate", "--model", a.model, "--prompts", W("ids.jsonl"), "--max-new-tokens", "4", "--output", W("ids_out.jsonl")])
    with open(W("ids_out.jsonl")) as fo:
        ids = [json.loads(x)["id"] for x in fo]
    check(r.returncode == 0 and ids == ["a-1", "42"], "JSONL ids carried through, always as strings (as eval): %s" % ids)
    r = run(["generate", "--model", a.model, "--prompts", W("ids.jsonl"), "--max-new-tokens", "4", "--output", "-"])
    with open(W("ids_out.jsonl")) as fo:
        same = r.stdout == fo.read()
    check(r.returncode == 0 and same and not os.path.exists("-"), "--output - writes the same JSONL to stdout, no file '-'")
    # a prompt longer than --context-length: one warning naming it (0-based, as the ids) and one count
    with open(W("long.txt"), "w") as fp:
        fp.write("hi\n" + " ".join("abcdefghijklmnopqrstuvwxyz") + "\n")
    r = run(["generate", "--model", a.model, "--prompts", W("long.txt"), "--max-new-tokens", "2", "--context-length", "12",
             "--output", W("long_out.jsonl")])
    warn = [l for l in r.stderr.splitlines() if "warning" in l]
    check(r.returncode == 0 and len(warn) == 2 and "prompt 1 (0-based)" in warn[0] and "keeping its last 11 tokens" in warn[0]
          and "1 prompt(s) were left-truncated" in warn[1], "context truncation: one warning per prompt + a count: %s" % warn)
    # --context-length above the model's max_position_embeddings: one warning, the model's limit used
    r = run(["generate", "--model", a.model, "--prompt", "Hi", "--max-new-tokens", "2", "--context-length", "1000000"])
    warn = [l for l in r.stderr.splitlines() if "warning" in l]
    check(r.returncode == 0 and len(warn) == 1 and "1000000" in warn[0] and "max_position_embeddings" in warn[0],
          "context length above the model's: one warning: %s" % warn)
    # the first non-blank line decides the format: a text file keeps a later line starting with '{'
    # as text; a JSONL file with a plain line is an error naming it
    with open(W("brace.txt"), "w") as fp:
        fp.write("hello\n{x = 1} is a block\n")
    r = run(["generate", "--model", a.model, "--prompts", W("brace.txt"), "--max-new-tokens", "2", "--output", W("brace_out.jsonl")])
    got = [json.loads(x)["prompt"] for x in open(W("brace_out.jsonl"))] if r.returncode == 0 else []
    check(got == ["hello", "{x = 1} is a block"], "text prompts with a '{' line kept as text: %s %s" % (got, r.stderr))
    with open(W("nul.txt"), "wb") as fp:
        fp.write(b"abc\x00def\nsecond\n")
    expect_error(["generate", "--model", a.model, "--prompts", W("nul.txt")], ["nul.txt", "byte 3 (line 1)", "NUL byte"],
                 rc_want=1, what="a prompt file with a NUL byte")
    with open(W("nulesc.jsonl"), "w") as fp:
        fp.write('{"prompt": "a\\u0000b"}\n')
    expect_error(["generate", "--model", a.model, "--prompts", W("nulesc.jsonl")], ["nulesc.jsonl", "line 1", "\\u0000"],
                 rc_want=1, what="a JSONL prompt with a \\u0000 escape")
    expect_error(["generate", "--model", a.model, "--prompt", "hi", "--include-ids"], ["--include-ids needs --output"],
                 rc_want=2, what="--include-ids without --output")
    # --prompts-format text: a first line starting with '{' is text too
    with open(W("brace1.txt"), "w") as fp:
        fp.write("{x = 1} is a block\nhello\n")
    r = run(["generate", "--model", a.model, "--prompts", W("brace1.txt"), "--prompts-format", "text", "--max-new-tokens", "2",
             "--output", W("brace1_out.jsonl")])
    got = [json.loads(x)["prompt"] for x in open(W("brace1_out.jsonl"))] if r.returncode == 0 else []
    check(got == ["{x = 1} is a block", "hello"], "--prompts-format text reads a '{' first line as text: %s %s" % (got, r.stderr))
    expect_error(["generate", "--model", a.model, "--prompts", W("brace.txt"), "--prompts-format", "jsonl"],
                 ["brace.txt", "line 1", "--prompts-format jsonl"], what="--prompts-format jsonl on a text file")
    with open(W("mixed.jsonl"), "w") as fp:
        fp.write('{"prompt": "a"}\nplain\n')
    expect_error(["generate", "--model", a.model, "--prompts", W("mixed.jsonl")],
                 ["mixed.jsonl", "line 2", "not a JSON object"], what="JSONL with a plain line")
    with open(W("junk.jsonl"), "w") as fp:
        fp.write('{"prompt": "a"} and more\n')
    expect_error(["generate", "--model", a.model, "--prompts", W("junk.jsonl")],
                 ["junk.jsonl", "line 1, column 17", "invalid JSON"], what="JSONL line with text after the object")
    # a UTF-8 BOM is skipped; prompts without an id get their 0-based index as a string
    with open(W("bom.jsonl"), "wb") as fp:
        fp.write(b'\xef\xbb\xbf{"prompt": "Hello"}\n{"prompt": "Bye", "id": "z"}\n')
    r = run(["generate", "--model", a.model, "--prompts", W("bom.jsonl"), "--max-new-tokens", "2", "--output", W("bom_out.jsonl")])
    with open(W("bom_out.jsonl")) as fo:
        recs = [json.loads(x) for x in fo]
    check(r.returncode == 0 and [x["id"] for x in recs] == ["0", "z"] and recs[0]["prompt"] == "Hello",
          "BOM skipped, ids %s" % [x["id"] for x in recs])
    with open(W("dup.jsonl"), "w") as fp:
        fp.write('{"prompt": "a", "id": 5}\n{"prompt": "b"}\n{"prompt": "c", "id": 5}\n')
    expect_error(["generate", "--model", a.model, "--prompts", W("dup.jsonl")],
                 ["dup.jsonl", "line 3", "duplicate id \"5\"", "line 1"], what="duplicate ids")

    # invalid UTF-8 in prompts: a warning per prompt, and the JSONL stays valid UTF-8 (U+FFFD)
    with open(W("bad_utf8.txt"), "wb") as fp:
        fp.write(b"Hello \xff world\nfine\ncaf\xc3 \xed\xa0\x80 ok\n")
    rb = subprocess.run([EXE, "generate", "--model", a.model, "--prompts", W("bad_utf8.txt"), "--max-new-tokens", "4",
                         "--output", W("bad_utf8_out.jsonl")], capture_output=True, timeout=300)
    err = rb.stderr.decode("utf-8", "replace")
    try:
        recs = [json.loads(x) for x in open(W("bad_utf8_out.jsonl"), "rb").read().decode("utf-8").splitlines()]
    except (ValueError, OSError) as e:
        recs = None
        print("invalid output:", e)
    check(rb.returncode == 0 and recs is not None and recs[0]["prompt"] == "Hello \ufffd world"
          and recs[2]["prompt"] == "caf\ufffd \ufffd\ufffd\ufffd ok"
          and "prompt 0 (0-based): invalid UTF-8 replaced with U+FFFD" in err
          and "prompt 2 (0-based): invalid UTF-8 replaced with U+FFFD" in err and "prompt 1 (0-based):" not in err,
          "invalid UTF-8 prompts -> valid JSONL with U+FFFD and a warning per prompt")

    # ---- chat on piped stdin ----
    r = run(["chat", "--model", a.model, "--max-new-tokens", "16"], "Hi there\n/reset\nWhat is 2+2?\nAnd 3+3?\n/quit\nignored\n")
    check(r.returncode == 0 and "(conversation reset)" in r.stdout and len(r.stdout.strip().splitlines()) >= 4,
          "chat REPL on piped stdin: %r" % r.stdout[:200])

    # chat context overflow: whole oldest turns dropped (never a cut inside the template)
    r = run(["chat", "--model", a.model, "--max-new-tokens", "8", "--context-length", "100"],
            "Hi there, how are you today?\nTell me about cats please.\nAnd dogs?\nWhat about birds and fish?\n"
            "Thanks a lot!\n" + "word " * 120 + "\n")
    check(r.returncode == 0 and "(context full: dropped 1 oldest turn)" in r.stderr
          and "keeping its last" not in r.stderr and "(message too long" in r.stderr
          and len(r.stdout.strip().splitlines()) == 5, "chat context overflow: %r" % r.stderr[-300:])

    print("cli e2e: %s" % ("PASS" if not FAILS else "FAIL (%d)" % len(FAILS)))
    sys.exit(1 if FAILS else 0)


if __name__ == "__main__":
    main()
