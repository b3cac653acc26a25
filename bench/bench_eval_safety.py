"""bench_eval_safety.py - PyTorch reference side of bench/run_eval_safety.sh.

Builds the AdvBench chat prompts independently of our C code (HF `tokenizers` BPE from the GGUF
metadata, the GGUF's Jinja chat template rendered with jinja2 with add_generation_prompt), then runs
the KV-cached batched greedy loop of bench/generate_ref.py over them in static batches of --batch
(fp32, and bf16 autocast with --bf16), and prints one JSON line: tokens, seconds, tokens/s. With
--compare RESPONSES.jsonl (safetune's output) it also reports how many greedy answers are identical
text.

usage: bench_eval_safety.py MODEL ADVBENCH.csv --n N --max-new-tokens 128 --batch 32 [--bf16]
       [--compare responses.jsonl]
"""
import argparse
import csv
import json
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "reference"))
import generate_ref  # noqa: E402
import llama_ref  # noqa: E402

torch.set_num_threads(os.cpu_count() or 1)


def tokenizer_from_gguf(path):
    import gguf
    import jinja2
    from tokenizers import Tokenizer, AddedToken, models, pre_tokenizers, decoders
    r = gguf.GGUFReader(path)

    def arr(key):
        f = r.fields[key]
        return [f.parts[i] for i in f.data]

    tokens = [bytes(p).decode("utf-8") for p in arr("tokenizer.ggml.tokens")]
    ttype = [int(p[0]) for p in arr("tokenizer.ggml.token_type")]
    merges = [tuple(bytes(p).decode("utf-8").split(" ", 1)) for p in arr("tokenizer.ggml.merges")]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                            for i in range(len(tokens)) if ttype[i] == 3])
    f = r.fields["tokenizer.chat_template"]
    tmpl = jinja2.Environment().from_string(bytes(f.parts[f.data[0]]).decode())
    stop = {int(r.fields["tokenizer.ggml.eos_token_id"].contents()), tokens.index("<|im_end|>")}
    return tok, tmpl, stop


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("csv")
    ap.add_argument("--n", type=int, default=520)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--compare")
    a = ap.parse_args()
    tok, tmpl, stop = tokenizer_from_gguf(a.model)
    with open(a.csv, newline="", encoding="utf-8") as f:
        goals = [row["goal"] for row in csv.DictReader(f)][:a.n]
    prompts = [tok.encode(tmpl.render(messages=[{"role": "user", "content": g}], add_generation_prompt=True,
                                      bos_token="", eos_token=""), add_special_tokens=False).ids for g in goals]
    m = llama_ref.load(a.model)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if a.bf16 else torch.autocast("cpu", enabled=False)
    outs = []
    with ctx:
        generate_ref.cached_greedy(m, [prompts[0][:8]], 2, stop)  # warm-up
        t0 = time.time()
        for i in range(0, len(prompts), a.batch):
            outs += generate_ref.cached_greedy(m, prompts[i:i + a.batch], a.max_new_tokens, stop)
        dt = time.time() - t0
    n = sum(len(x) for x in outs)
    res = {"config": "torch bf16 autocast" if a.bf16 else "torch fp32", "threads": torch.get_num_threads(),
           "prompts": len(prompts), "tokens": n, "seconds": round(dt, 2), "tok_per_s": round(n / dt, 2)}
    if a.compare:
        ours = [json.loads(l)["response"] for l in open(a.compare, encoding="utf-8")][:len(outs)]
        texts = [tok.decode([t for t in o if t not in stop], skip_special_tokens=True) for o in outs]
        res["identical_answers"] = "%d/%d" % (sum(x == y for x, y in zip(ours, texts)), len(ours))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
