"""check_chat_cli.py - `safetune tokenize`, --stop-id / --stop, --date-string and `chat`'s UTF-8
streaming, end to end.

tokenize: ids of plain text equal Hugging Face `tokenizers` (the real Llama-3.2 tokenizer.json and
the SmolLM2 GGUF); --chat ids and assistant mask equal jinja2 + `tokenizers` on the real Llama-3.2
template with --date-string; --json fields; bad input exits 1/2 with a message naming it.
stops: generate --stop-id N ends at the first N, --stop TEXT cuts the reply before TEXT (finish
"stop"), chat --stop never shows TEXT; a stop id outside the vocabulary is refused.
chat: a --max-new-tokens budget that cuts a character in half (found from generate's reply) still
writes valid UTF-8, the cut character ending as U+FFFD.
Exit 0 = pass, 1 = fail, 77 = inputs missing (a failure under SAFETUNE_REQUIRE_INPUTS)."""
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


def run(args, stdin=None, text=True):
    return subprocess.run([EXE] + args, capture_output=True, text=text, input=stdin, timeout=300)


def gen_json(args):
    out = os.path.join(WORK, "gen.jsonl")
    r = run(["generate"] + args + ["--output", out, "--include-ids", "--quiet"])
    assert r.returncode == 0, r.stderr
    with open(out) as f:
        return json.loads(f.readline())


def main():
    global EXE, WORK
    ap = argparse.ArgumentParser()
    for k in ("safetune", "model", "data", "templates", "workdir"):
        ap.add_argument("--" + k, required=True)
    a = ap.parse_args()
    EXE, WORK = a.safetune, a.workdir
    l32 = os.path.join(a.data, "tokenizers", "llama-3.2", "tokenizer.json")
    for p in (a.model, l32):
        if not os.path.exists(p):
            print("SKIP: " + p + " is missing (scripts/fetch_model.sh, scripts/fetch_tokenizers.sh)")
            sys.exit(77)
    os.makedirs(WORK, exist_ok=True)
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from tokenizers import Tokenizer

    # ---- tokenize: plain text ----
    hf = Tokenizer.from_file(l32)
    text = "Héllo wörld! 12345 <|eot_id|> don't  stop 🌟"
    r = run(["tokenize", "--model", os.path.dirname(l32), "--json", text])
    j = json.loads(r.stdout) if r.returncode == 0 else {}
    want = hf.encode(text, add_special_tokens=True).ids
    check(j.get("ids") == want, "tokenize ids == HF tokenizers (Llama-3.2, BOS + special text parsed)")
    check(j.get("tokens", [None])[0] == "<|begin_of_text|>" and len(j.get("pieces", [])) == len(want)
          and j.get("n_tokens") == len(want), "tokenize --json: tokens, pieces, n_tokens")
    pieces = b"".join(bytes.fromhex(h) for h in j.get("pieces_hex", []))
    check(pieces.decode("utf-8", "replace") == hf.decode(want, skip_special_tokens=False),
          "tokenize --json: pieces_hex concatenate to the decoded text")
    r = run(["tokenize", "--model", a.model, "Hello, world!"])
    j = json.loads(run(["tokenize", "--model", a.model, "--json", "Hello, world!"]).stdout)
    check(r.returncode == 0 and r.stdout.startswith("%d tokens\n" % j["n_tokens"]) and "Hello" in r.stdout,
          "tokenize on a GGUF (table output)")
    with open(os.path.join(WORK, "in.txt"), "w") as f:
        f.write("from a file")
    r = run(["tokenize", "--model", a.model, "--json", "--file", os.path.join(WORK, "in.txt")])
    check(r.returncode == 0 and json.loads(r.stdout)["n_tokens"] == 3, "tokenize --file")

    # ---- tokenize --chat: Llama-3.2 template, mask and date against jinja2 + tokenizers ----
    conv = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"},
            {"role": "assistant", "content": " Hi there 👋 "}, {"role": "user", "content": "Again?"}]
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    tpl = env.from_string(open(os.path.join(a.templates, "llama-3.2.jinja")).read())
    for date in (None, "06 Dec 2026"):
        args = ["tokenize", "--model", os.path.dirname(l32), "--template", "llama3.2", "--chat", "--json",
                json.dumps(conv)]
        if date:
            args += ["--date-string", date]
        r = run(args)
        j = json.loads(r.stdout) if r.returncode == 0 else {}
        rendered = tpl.render(messages=conv, add_generation_prompt=True, bos_token="<|begin_of_text|>",
                              date_string=date or "26 Jul 2024")
        e = hf.encode(rendered, add_special_tokens=False)
        c = conv[2]["content"].strip()
        k = rendered.find(c + "<|eot_id|>")  # the assistant content, then its end of turn
        mask = [1 if s < k + len(c) and t > k else 0 for s, t in e.offsets]
        eot = next(i for i, (s, t) in enumerate(e.offsets) if s >= k + len(c) and e.ids[i] == 128009)
        mask[eot] = 1
        check(j.get("ids") == e.ids, "tokenize --chat ids == jinja2 + tokenizers (date %s)" % (date or "default"))
        check(j.get("mask") == mask, "tokenize --chat mask: assistant content + its <|eot_id|>")
        check(j.get("text") == rendered and j.get("template") == "llama3.1"
              and j.get("date_string") == (date or "26 Jul 2024"), "tokenize --chat text, template, date")
    r = run(["tokenize", "--model", a.model, "--chat", "plain message", "--system-prompt", "S"])
    check(r.returncode == 0 and "<|im_start|>system\nS<|im_end|>" in r.stdout and "template: chatml" in r.stdout,
          "tokenize --chat, plain message + --system-prompt (ChatML)")
    r = run(["tokenize", "--model", a.model, "--chat", "[{\"role\": \"user\"}]"])
    check(r.returncode == 1 and "message 0" in r.stderr and r.stdout == "", "tokenize --chat: bad message -> 1")
    r = run(["tokenize", "--model", a.model, "x", "--file", "y"])
    check(r.returncode == 2 and "exactly one" in r.stderr, "tokenize TEXT and --file -> 2")
    r = run(["tokenize", "--model", os.path.join(WORK, "nope"), "x"])
    check(r.returncode == 1 and "nope" in r.stderr, "tokenize on a missing model -> 1")
    r = run(["tokenize", "--model", a.model, "--chat", "x", "--date-string", "26 Jul 2024"])
    check(r.returncode == 0 and "no effect" in r.stderr, "--date-string on a ChatML template warns")

    # ---- stops ----
    prompt = "List three fruits, one per line."
    full = gen_json(["--model", a.model, "--chat", "--prompt", prompt, "--max-new-tokens", "24"])
    ids = full["completion_ids"]
    sid = ids[3]
    g = gen_json(["--model", a.model, "--chat", "--prompt", prompt, "--max-new-tokens", "24", "--stop-id", str(sid)])
    check(g["completion_ids"] == ids[:ids.index(sid) + 1] and g["finish_reason"] == "stop",
          "generate --stop-id %d ends at its first occurrence" % sid)
    resp = full["response"]
    words = [w for w in resp.split() if len(w) > 3]
    check(len(words) >= 2, "the greedy reply has words to stop on: %r" % resp)
    stop = words[1] if len(words) >= 2 else "zzzz"
    g = gen_json(["--model", a.model, "--chat", "--prompt", prompt, "--max-new-tokens", "24", "--stop", stop,
                  "--stop", "never-in-the-reply"])
    check(g["response"] == resp[:resp.find(stop)] and g["finish_reason"] == "stop",
          "generate --stop %r cuts the reply before it" % stop)
    r = run(["chat", "--model", a.model, "--max-new-tokens", "24", "--stop", stop], stdin=prompt + "\n")
    check(r.returncode == 0 and stop not in r.stdout and r.stdout.strip() == resp[:resp.find(stop)].strip(),
          "chat --stop %r: never shown, reply cut before it" % stop)
    r = run(["generate", "--model", a.model, "--prompt", "hi", "--stop-id", "999999"])
    check(r.returncode == 1 and "999999" in r.stderr and "vocabulary" in r.stderr, "--stop-id outside the vocabulary -> 1")
    r = run(["generate", "--model", a.model, "--prompt", "hi", "--stop-id", "x"])
    check(r.returncode == 2 and "--stop-id" in r.stderr, "--stop-id x -> 2")

    # ---- chat: a budget that cuts a character in half ----
    prompt = "Reply with three heart emojis."
    cut = None
    for n in range(1, 9):
        g = gen_json(["--model", a.model, "--chat", "--prompt", prompt, "--max-new-tokens", str(n)])
        if g["response"].endswith("\ufffd") and g["finish_reason"] == "length":
            cut = n
            break
    check(cut is not None, "a --max-new-tokens budget cuts a character of the reply (%s)" % cut)
    if cut:
        r = run(["chat", "--model", a.model, "--max-new-tokens", str(cut)], stdin=(prompt + "\n").encode(), text=False)
        try:
            out = r.stdout.decode("utf-8")
            ok = True
        except UnicodeDecodeError as e:
            out, ok = repr(r.stdout), False
            print("  stdout is not UTF-8:", e)
        check(r.returncode == 0 and ok, "chat --max-new-tokens %d: stdout is valid UTF-8" % cut)
        check(ok and out.rstrip("\n").endswith("\ufffd"), "chat: the cut character ends as U+FFFD: %r" % out)
    if FAILS:
        print("FAILED:", len(FAILS))
        sys.exit(1)
    print("all chat/tokenize CLI checks passed")


if __name__ == "__main__":
    main()
