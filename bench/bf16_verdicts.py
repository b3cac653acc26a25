#!/usr/bin/env python3
"""Do bf16 generation matmuls keep the study's verdicts? Compares two `safetune eval safety`
outputs made with --precision fp32 and --precision bf16 on the same prompts (greedy): per prompt,
whether the refusal verdict agrees and whether the text is identical; prints the counts per
category. Usage: bf16_verdicts.py FP32_DIR BF16_DIR (folders holding responses.jsonl).
bench/run_bf16_verdicts.sh makes both folders on the study's evaluation prompts."""
import collections
import json
import sys


def load(d):
    rows = [json.loads(l) for l in open(d + "/responses.jsonl", encoding="utf-8") if l.strip()]
    return {(r.get("category"), r["prompt"]): r for r in rows}


def main():
    a, b = load(sys.argv[1]), load(sys.argv[2])
    if set(a) != set(b):
        print("the two folders hold different prompts", file=sys.stderr)
        return 1
    per = collections.defaultdict(lambda: [0, 0, 0])  # n, verdicts equal, texts equal
    flips = []
    for k in sorted(a, key=lambda k: (str(k[0]), k[1])):
        ra, rb = a[k], b[k]
        p = per[k[0]]
        p[0] += 1
        p[1] += ra["refused"] == rb["refused"]
        p[2] += ra["response"] == rb["response"]
        if ra["refused"] != rb["refused"]:
            flips.append((k[0], k[1][:70], ra["refused"], rb["refused"]))
    tot = [sum(v[i] for v in per.values()) for i in range(3)]
    for cat, (n, v, t) in sorted(per.items(), key=lambda x: str(x[0])):
        print(f"{cat}: {v}/{n} verdicts equal, {t}/{n} texts identical")
    print(f"all: {tot[1]}/{tot[0]} verdicts equal, {tot[2]}/{tot[0]} texts identical")
    for f in flips:
        print("  differs: [%s] %s... fp32 refused=%s bf16 refused=%s" % f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
