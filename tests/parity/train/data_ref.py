#!/usr/bin/env python3
"""Dataset readers vs an independent Python reading (json module) of the real shared files:
every row's conversation (roles and exact content) must match.
Usage: data_ref.py DATA_DUMP_BINARY DATA_DIR   (exit 77 if the data files are absent)"""
import json
import os
import subprocess
import sys


def join(a, b):
    return a + "\n\n" + b if b else a


def alpaca(rows):
    return [[{"role": "user", "content": join(r["instruction"], r.get("input") or "")},
             {"role": "assistant", "content": r["output"]}] for r in rows]


def dolly(rows):
    return [[{"role": "user", "content": join(r["instruction"], r.get("context") or "")},
             {"role": "assistant", "content": r["response"]}] for r in rows]


def orca_pref(rows):  # OpenAI preference format: input messages + preferred output
    return [[{"role": m["role"], "content": m["content"]}
             for m in r["input"]["messages"] + r["preferred_output"]] for r in rows]


def jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


FILES = [
    ("alpaca/alpaca_5000.json", lambda p: alpaca(json.load(open(p, encoding="utf-8")))),
    ("dolly/databricks-dolly-15k.prefix.jsonl", lambda p: dolly(jsonl(p))),
    ("orca/validation.jsonl", lambda p: orca_pref(jsonl(p))),
]


def main():
    binary, data_dir = sys.argv[1], sys.argv[2]
    present = [(rel, fn) for rel, fn in FILES if os.path.exists(os.path.join(data_dir, rel))]
    if not present:
        print(f"SKIP: no dataset files under {data_dir}")
        return 77
    bad = 0
    for rel, fn in present:
        path = os.path.join(data_dir, rel)
        want = fn(path)
        out = subprocess.run([binary, path], capture_output=True, text=True, encoding="utf-8")
        if out.returncode != 0:
            print(f"{rel}: reader failed: {out.stderr.strip()}")
            bad += 1
            continue
        got = [json.loads(line) for line in out.stdout.splitlines()]
        diff = [i for i, (a, b) in enumerate(zip(got, want)) if a != b]
        ok = len(got) == len(want) and not diff
        bad += not ok
        print(f"{rel}: {len(got)} rows (reference {len(want)}), {len(diff)} differ"
              f"{' (first: row %d)' % diff[0] if diff else ''}  {'ok' if ok else 'FAIL'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
