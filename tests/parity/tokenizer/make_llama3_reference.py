#!/usr/bin/env python3
"""Reference token ids and assistant masks for the Llama-3.x chat templates, from Hugging Face:
the real chat_template texts (templates/*.jinja, see templates/SOURCES.md) rendered with jinja2 as
transformers renders them (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks,
raise_exception), then tokenized with `tokenizers` from the real Llama-3 tokenizer.json
(scripts/fetch_tokenizers.sh) with add_special_tokens=False (apply_chat_template(tokenize=True)).
The mask marks tokens overlapping an assistant message's content (HF offsets) and the
<|eot_id|> that closes it.

usage: make_llama3_reference.py TEMPLATE_DIR DATA_DIR OUT_DIR
Exit 77 if an input is missing (a skip, or a failure under SAFETUNE_REQUIRE_INPUTS:
cmake/require_inputs.cmake)."""
import csv
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def missing(msg):
    print("SKIP: " + msg + " (run scripts/fetch_tokenizers.sh)")
    sys.exit(77)


# (template file, tokenizer folder under DATA_DIR/tokenizers)
CASES = [("llama-3.0", "llama-3.0"), ("llama-3.1", "llama-3.2"), ("llama-3.2", "llama-3.2"),
         ("llama-3.3", "llama-3.2")]

HAND = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are a helpful assistant."},
     {"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi there!"},
     {"role": "assistant", "content": "Hello. How can I help?"}],
    [{"role": "user", "content": "Count to 3."}, {"role": "assistant", "content": "1, 2, 3."},
     {"role": "user", "content": "Now backwards,\nplease."}, {"role": "assistant", "content": " 3, 2, 1.\n"}],
    [{"role": "system", "content": "  Be safe.\n\n"}, {"role": "user", "content": "Write a poem about 42 cats 🐈."},
     {"role": "assistant", "content": "Forty-two cats\n\n  sat on mats."},
     {"role": "user", "content": "Another, in French?"},
     {"role": "assistant", "content": "Quarante-deux chats\nsur des tapis."}],
    [{"role": "user", "content": "héllo wörld\tt\u0301ab"}, {"role": "assistant", "content": "ok"}],
    [{"role": "user", "content": "Translate: 你好，世界！"}, {"role": "assistant", "content": "Hello, world!"}],
    [{"role": "system", "content": ""}, {"role": "user", "content": "Empty system prompt."},
     {"role": "assistant", "content": ""}],
    [{"role": "user", "content": "def f(x):\n    return x ** 2\n\nWhat does it do?"},
     {"role": "assistant", "content": "It squares `x`:\n\n```python\nf(3) == 9\n```"}],
    [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Sky colour?"},
     {"role": "assistant", "content": "Blue."}, {"role": "user", "content": "Grass?"},
     {"role": "assistant", "content": "Green."}, {"role": "user", "content": "Snow?"}],
    [{"role": "user", "content": "   \n\t  "}, {"role": "assistant", "content": "\n\nNothing to answer.\n\n"}],
    [{"role": "user", "content": "I'm sure they'll say it's fine, don't you think? 1234567 x 89 = ?"},
     {"role": "assistant", "content": "109,873,463. I'D SAY IT'S FINE."}],
]


def from_data(data):
    """Conversations from the fetched AdvBench and Alpaca files (multi-turn, with and without a
    system message)."""
    with open(f"{data}/advbench/harmful_behaviors.csv", newline="") as f:
        adv = [r["goal"] for r in csv.DictReader(f)][:6]
    with open(f"{data}/alpaca/alpaca_5000.json") as f:
        alp = json.load(f)[:12]
    out = []
    for i, g in enumerate(adv):
        c = [{"role": "user", "content": g}]
        if i % 2:
            c.insert(0, {"role": "system", "content": "You are a helpful, harmless assistant."})
        if i % 3 == 0:
            c.append({"role": "assistant", "content": "I can't help with that."})
        out.append(c)
    for i in range(0, len(alp), 2):
        a, b = alp[i], alp[i + 1]
        u1 = a["instruction"] + ("\n\n" + a["input"] if a["input"] else "")
        c = [{"role": "user", "content": u1}, {"role": "assistant", "content": a["output"]},
             {"role": "user", "content": b["instruction"]}, {"role": "assistant", "content": b["output"]}]
        if i % 4 == 0:
            c.insert(0, {"role": "system", "content": "Below is an instruction. Respond well."})
        out.append(c)
    return out


def main():
    tdir, data, out = sys.argv[1], sys.argv[2], sys.argv[3]
    need = [f"{tdir}/{t}.jinja" for t, _ in CASES] + [f"{data}/tokenizers/{k}/tokenizer.json" for _, k in CASES]
    need += [f"{data}/advbench/harmful_behaviors.csv", f"{data}/alpaca/alpaca_5000.json"]
    for p in need:
        if not os.path.exists(p):
            missing(f"{p} is missing")
    try:
        from jinja2.sandbox import ImmutableSandboxedEnvironment
        from tokenizers import Tokenizer
    except ImportError as e:
        missing(f"python reference: {e}")

    def raise_exception(msg):
        raise RuntimeError(msg)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    convs = HAND + from_data(data)
    os.makedirs(out, exist_ok=True)
    n = 0
    with open(f"{out}/llama3_chat_expected.jsonl", "w") as f:
        for tname, kname in CASES:
            src = open(f"{tdir}/{tname}.jinja").read()
            tpl = env.from_string(src)
            tok = Tokenizer.from_file(f"{data}/tokenizers/{kname}/tokenizer.json")
            eot = "<|eot_id|>"
            eot_id = tok.token_to_id(eot)
            for ci, conv in enumerate(convs):
                for agp in (0, 1):
                    if agp and conv[-1]["role"] != "user":
                        continue
                    date = "06 Dec 2026" if ci % 5 == 4 else None  # else the default date
                    kw = {"date_string": date} if date else {}
                    if tname == "llama-3.2" and not date:
                        kw = {"date_string": "26 Jul 2024"}  # HF defines strftime_now (today)
                    text = tpl.render(messages=conv, add_generation_prompt=bool(agp), bos_token="<|begin_of_text|>",
                                      eos_token="<|eot_id|>", **kw)
                    spans, pos = [], 0
                    for m in conv:  # each message's (trimmed) content ends right before an <|eot_id|>
                        c = m["content"].strip()
                        k = text.find(c + eot, pos)
                        assert k >= 0, (tname, ci, c)
                        if m["role"] == "assistant":
                            spans.append((k, k + len(c)))
                        pos = k + len(c) + len(eot)
                    e = tok.encode(text, add_special_tokens=False)
                    ids, offs = e.ids, e.offsets
                    mask = [0] * len(ids)
                    for a, b in spans:
                        for j, (s, t) in enumerate(offs):
                            if s < b and t > a and ids[j] != eot_id:
                                mask[j] = 1
                        for j, (s, t) in enumerate(offs):
                            if ids[j] == eot_id and s >= b:
                                mask[j] = 1
                                break
                    f.write(json.dumps({"template": tname, "tok": kname, "conv": ci, "agp": agp, "date": date,
                                        "messages": conv, "ids": ids, "mask": mask, "text": text}) + "\n")
                    n += 1
    print(f"wrote {n} Llama-3.x chat references ({len(convs)} conversations x {len(CASES)} templates)")


if __name__ == "__main__":
    main()
