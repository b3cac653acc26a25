"""check_generate.py - greedy generation parity: `safetune generate` vs the PyTorch reference.

Runs the CLI on chat prompts of different lengths with --batch-size B (ctest runs it twice: all
prompts in one batch, and unbatched with B = 1; both matching the reference token for token means
batched and unbatched results are identical), 64 new tokens each, and checks:
  * the JSONL output is valid (id, prompt, response, finish_reason, tokens, ids);
  * every generated token is the reference's greedy choice: one causal forward of llama_ref over
    prompt + completion gives the logits after every prefix, and argmax at each position must be
    the next generated token (teacher forcing; equivalent to token-by-token greedy decoding);
  * the sequence ends exactly at the first stop id (finish "stop") or at 64 tokens ("length").
On a mismatch it prints the reference's logit gap at the divergence (near-ties can flip in fp32).
Exit 0 = pass, 1 = fail, 77 = inputs missing (skip).
"""
import argparse
import json
import os
import subprocess
import sys

PROMPTS = [
    "What is the capital of France?",
    "Write a short story about a robot who learns to paint.",
    "Explain in two sentences why the sky is blue.",
    "Describe how a bicycle works, part by part.",
    "Hi!",
    "Give me a recipe for chocolate chip cookies.",
    "I am planning a trip to Japan in the spring. Could you suggest a one-week itinerary that "
    "covers Tokyo and Kyoto, with one day trip, and tell me what to pack?",
]
N_NEW = 64


def run_cli(exe, model, prompts_file, out, batch, precision="fp32"):
    cmd = [exe, "generate", "--model", model, "--prompts", prompts_file, "--chat", "--max-new-tokens",
           str(N_NEW), "--batch-size", str(batch), "--include-ids", "--quiet", "--output", out,
           "--precision", precision]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print("FAIL: %s exited %d: %s" % (" ".join(cmd), r.returncode, r.stderr.strip()))
        sys.exit(1)
    recs = []
    with open(out) as f:
        for i, line in enumerate(f):
            o = json.loads(line)
            for k in ("id", "prompt", "response", "finish_reason", "tokens", "prompt_ids", "completion_ids"):
                assert k in o, "line %d: missing %s" % (i + 1, k)
            assert o["finish_reason"] in ("stop", "length"), o["finish_reason"]
            assert o["tokens"]["completion"] == len(o["completion_ids"])
            assert o["tokens"]["prompt"] == len(o["prompt_ids"])
            recs.append(o)
    assert len(recs) == len(PROMPTS), "expected %d records, got %d" % (len(PROMPTS), len(recs))
    assert [r["prompt"] for r in recs] == PROMPTS
    return recs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--safetune", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--report-only", action="store_true",
                    help="print how many prompts match (e.g. for --precision bf16) and exit 0")
    a = ap.parse_args()
    if not os.path.exists(a.model):
        print("SKIP: model %s not found" % a.model)
        sys.exit(77)
    try:
        import torch
        import gguf
    except ImportError as e:
        print("SKIP: reference python lacks %s" % e)
        sys.exit(77)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "reference"))
    import llama_ref

    a.workdir = os.path.join(a.workdir, "b%d_%s" % (a.batch_size, a.precision))
    os.makedirs(a.workdir, exist_ok=True)
    pf = os.path.join(a.workdir, "gen_prompts.jsonl")
    with open(pf, "w") as f:
        for p in PROMPTS:
            f.write(json.dumps({"prompt": p}) + "\n")
    batched = run_cli(a.safetune, a.model, pf, os.path.join(a.workdir, "gen_b%d.jsonl" % a.batch_size),
                      a.batch_size, a.precision)

    # stop ids from the GGUF metadata (independent of our tokenizer/chat code)
    r = gguf.GGUFReader(a.model)
    toks = r.fields["tokenizer.ggml.tokens"].contents()
    stop = {int(r.fields["tokenizer.ggml.eos_token_id"].contents()), toks.index("<|im_end|>")}

    m = llama_ref.load(a.model)
    ok = True
    n_same = 0
    lens = sorted(len(x["prompt_ids"]) for x in batched)
    print("prompt lengths %s, stop ids %s" % (lens, sorted(stop)))
    for b in batched:
        pr, out = b["prompt_ids"], b["completion_ids"]
        good = True
        with torch.no_grad():
            lg = m.forward([pr + out])[0]
        for t, tok in enumerate(out):
            row = lg[len(pr) - 1 + t]
            ref = int(row.argmax())
            if ref != tok:
                top2 = torch.topk(row, 2).values
                print("FAIL: prompt %r: token %d: ours %d, reference %d; reference logits: ours %.6f, "
                      "best %.6f (gap %.3g), top-2 gap %.3g" % (b["prompt"], t, tok, ref, float(row[tok]),
                      float(row[ref]), float(row[ref] - row[tok]), float(top2[0] - top2[1])))
                good = False
                break
            if tok in stop and t != len(out) - 1:
                print("FAIL: prompt %r: stop id %d at %d but generation continued" % (b["prompt"], tok, t))
                good = False
                break
        want = "stop" if out and out[-1] in stop else "length"
        if b["finish_reason"] != want or (want == "length" and len(out) != N_NEW):
            print("FAIL: prompt %r: finish_reason %s with %d tokens" % (b["prompt"], b["finish_reason"], len(out)))
            good = False
        ok = ok and good
        n_same += good
        print("%-4s %-50.50r %3d prompt + %2d new (%s): %r" % ("ok" if good else "BAD", b["prompt"], len(pr), len(out),
              b["finish_reason"], b["response"][:60]))
    print("%s: %d/%d prompts token-identical to the reference over %d new tokens"
          % (a.precision, n_same, len(batched), N_NEW))
    if a.report_only:
        sys.exit(0)
    print("generate parity (batch size %d, %s): %s" % (a.batch_size, a.precision, "PASS" if ok else "FAIL"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
