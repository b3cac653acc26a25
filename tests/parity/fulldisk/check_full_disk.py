"""A full disk under `safetune train` and `safetune eval safety`, end to end: a tmpfs mounted by the
test, filled (a filler file) to leave just enough room for the run up to the point under test.
  train, checkpoint: the save of step 4 fails; the error names the checkpoint and ENOSPC and the
    last good checkpoint; step 2's checkpoint is intact and nothing half-written sits beside it;
    after the filler is removed, --resume auto finishes with losses and final/, final-ema/ weights
    bit-identical to an uninterrupted run's.
  train, export: the final export fails; the error names final*/ and ENOSPC; no final*/ is left
    half-written; after freeing space, --resume auto writes it, bit-identical.
  eval safety: the answers file fills the disk; the error names it and ENOSPC; the answers saved so
    far are kept whole; after freeing space the same command finishes, responses.jsonl and
    summary.json byte-identical to an uninterrupted run's.
Tiny random Llama with the Mistral tokenizer (check_trainer.tiny_chat_model). Needs root (mount):
without it, exit 77 (skipped; a failure under SAFETUNE_REQUIRE_INPUTS).
usage: check_full_disk.py   (env SAFETUNE_CLI, SAFETUNE_TEST_TMP, SAFETUNE_DATA_DIR)"""
import errno, os, shutil, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.environ.get("SAFETUNE_REPO", os.path.abspath(os.path.join(HERE, "../../..")))
sys.path.insert(0, os.path.join(REPO, "tests", "reference"))
sys.path.insert(0, os.path.join(REPO, "tests", "parity", "trainer"))
import check_trainer as ct  # noqa: E402  (tiny_chat_model, train_args, losses)

TMP = os.environ.get("SAFETUNE_TEST_TMP", "/tmp")
CLI = ct.CLI
ENOSPC = os.strerror(errno.ENOSPC)
PAGE = 4096
FAILS = []


def check(cond, what):
    print("%-4s %s" % ("ok" if cond else "FAIL", what))
    if not cond:
        FAILS.append(what)


def run(args):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600)


if not os.path.exists(ct.ALPACA):
    ct.skip(f"{ct.ALPACA} absent")
work = os.path.join(TMP, "full_disk_cli")
mnt = os.path.join(work, "mnt")
if os.path.ismount(mnt):
    subprocess.run(["umount", "-l", mnt])
shutil.rmtree(work, ignore_errors=True)
os.makedirs(mnt)
m = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", mnt], capture_output=True, text=True)
if m.returncode != 0:
    ct.skip(f"cannot mount a tmpfs on {mnt} (needs root): {m.stderr.strip()}")


def pages(path):
    """Bytes a file tree takes on tmpfs (whole pages per file)."""
    if os.path.isfile(path):
        return -(-os.path.getsize(path) // PAGE) * PAGE
    return sum(pages(os.path.join(path, n)) for n in os.listdir(path)) if os.path.isdir(path) else 0


def fill(leave):
    """Leave `leave` bytes free on the mount."""
    p = os.path.join(mnt, "filler")
    total = 0
    with open(p, "wb", buffering=0) as f:
        block = bytes(1 << 16)
        try:
            while True:
                total += f.write(block)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
        f.truncate(max(0, total - leave))


def free():
    if os.path.exists(os.path.join(mnt, "filler")):
        os.unlink(os.path.join(mnt, "filler"))


def leftovers(d):
    """Temp, partial or old copies anywhere under d."""
    bad = []
    for root, dirs, files in os.walk(d):
        for n in dirs + files:
            if (".tmp." in n or ".partial." in n or ".old." in n) and n != "responses.partial.jsonl":
                bad.append(os.path.join(root, n))
    return bad


try:
    # hidden 4: a checkpoint (5 weight-sized blobs) is smaller than the two final folders (weights
    # + the 1.8 MB tokenizer.json each), so a disk can hold the checkpoints but not the exports
    model = ct.tiny_chat_model(os.path.join(work, "model"), hidden_size=4, intermediate_size=8,
                               num_attention_heads=1, num_key_value_heads=1)
    steps = ["--max-steps", "8", "--save-every", "2", "--keep-checkpoints", "1"]
    ref = os.path.join(work, "ref")
    r = run(ct.train_args(model, ref, *steps))
    check(r.returncode == 0, f"uninterrupted reference run ({r.stderr.strip()[-300:]})")
    ck = lambda out, s: os.path.join(out, "checkpoints", f"step-{s:08d}")
    C = pages(ck(ref, 8))
    base = pages(os.path.join(ref, "config.json")) + pages(os.path.join(ref, "metrics.jsonl")) + 2 * PAGE
    finals = [n for n in os.listdir(ref) if n.startswith("final")]
    F = sum(pages(os.path.join(ref, n)) for n in finals)
    print(f"checkpoint {C} bytes, final folders {finals} {F} bytes")
    size = 4 * C + 2 * F + (8 << 20)  # room for the whole run once the filler is gone
    m = run(["mount", "-o", f"remount,size={size}", mnt])
    check(m.returncode == 0, f"tmpfs resized to {size} bytes ({m.stderr.strip()})")

    # 1) the checkpoint of step 4 does not fit
    out = os.path.join(mnt, "ckpt")
    os.makedirs(out)
    fill(base + C + C // 2)
    r = run(ct.train_args(model, out, *steps))
    check(r.returncode != 0, "checkpoint on a full disk: the run fails")
    check(ENOSPC in r.stderr and "checkpoints/step-00000004" in r.stderr and "last good checkpoint" in r.stderr,
          f"checkpoint on a full disk: the error names the checkpoint, ENOSPC and the last good one "
          f"({r.stderr.strip()[-400:]})")
    check(sorted(os.listdir(os.path.join(out, "checkpoints"))) == ["step-00000002"],
          f"checkpoint on a full disk: only step 2 under checkpoints/ ({os.listdir(os.path.join(out, 'checkpoints'))})")
    check(not leftovers(out), f"checkpoint on a full disk: nothing half-written left ({leftovers(out)})")
    free()
    r = run(ct.train_args(model, out, *steps, "--resume", "auto"))
    check(r.returncode == 0, f"checkpoint: --resume auto after freeing space exits 0 ({r.stderr.strip()[-300:]})")
    check(ct.losses(out) == ct.losses(ref), "checkpoint: losses of every step bit-identical to the uninterrupted run")
    for n in finals:
        a, b = os.path.join(out, n, "model.safetensors"), os.path.join(ref, n, "model.safetensors")
        check(os.path.exists(a) and open(a, "rb").read() == open(b, "rb").read(),
              f"checkpoint: {n}/model.safetensors bit-identical to the uninterrupted run's")
    shutil.rmtree(out)

    # 2) the final export does not fit; the checkpoints do (two at once while one is saved):
    #    the last step's checkpoint keeps the weights and --resume auto writes the final folders
    what = "export"
    out = os.path.join(mnt, "export")
    os.makedirs(out)
    fill(base + 2 * C + 4 * PAGE)
    r = run(ct.train_args(model, out, *steps))
    check(r.returncode != 0, f"{what} on a full disk: the run fails")
    check(ENOSPC in r.stderr and "/final" in r.stderr and "resume auto" in r.stderr,
          f"{what} on a full disk: the error names final*/ and ENOSPC and how to continue ({r.stderr.strip()[-500:]})")
    got = [n for n in os.listdir(out) if n.startswith("final")]
    check(len(got) < len(finals), f"{what}: some final folder was not written ({got})")
    complete = all(sorted(os.listdir(os.path.join(out, n))) == sorted(os.listdir(os.path.join(ref, n))) for n in got)
    check(complete, f"{what} on a full disk: every final*/ present is whole ({got})")
    check(not leftovers(out), f"{what} on a full disk: nothing half-written left ({leftovers(out)})")
    check(os.path.exists(os.path.join(ck(out, 8), "MANIFEST")), f"{what}: the last step is kept in a checkpoint")
    free()
    r = run(ct.train_args(model, out, *steps, "--resume", "auto"))
    check(r.returncode == 0, f"{what}: --resume auto after freeing space exits 0 ({r.stderr.strip()[-300:]})")
    for n in finals:
        a, b = os.path.join(out, n, "model.safetensors"), os.path.join(ref, n, "model.safetensors")
        check(os.path.exists(a) and open(a, "rb").read() == open(b, "rb").read(),
              f"{what}: {n}/model.safetensors bit-identical to the uninterrupted run's")
    shutil.rmtree(out)

    # 2b) --save-every 0: no checkpoint holds the weights when the export fails; one is tried, and
    #     the message says truthfully whether it was kept; nothing half-written either way
    out = os.path.join(mnt, "export0")
    os.makedirs(out)
    fill(base + F // 2)
    r = run(ct.train_args(model, out, "--max-steps", "8", "--save-every", "0"))
    kept = os.path.exists(os.path.join(ck(out, 8), "MANIFEST"))
    said = "the trained weights are kept in" in r.stderr
    check(r.returncode != 0 and ENOSPC in r.stderr and "/final" in r.stderr,
          f"export, --save-every 0, on a full disk: fails naming final*/ and ENOSPC ({r.stderr.strip()[-400:]})")
    check(said == kept and (said or "must be run again" in r.stderr),
          f"export, --save-every 0: says whether the weights were kept (kept: {kept})")
    check(not leftovers(out), f"export, --save-every 0: nothing half-written left ({leftovers(out)})")
    free()
    shutil.rmtree(out)

    # 3) eval safety: the answers fill the disk
    eargs = ["eval", "safety", "--model", model, "--limit", "40", "--max-new-tokens", "24", "--batch-size", "4",
             "--quiet"]
    eref = os.path.join(work, "eval_ref")
    r = run([CLI] + eargs + ["--out", eref])
    check(r.returncode == 0, f"eval: uninterrupted reference ({r.stderr.strip()[-300:]})")
    out = os.path.join(mnt, "eval")
    os.makedirs(out)
    fill(2 * PAGE)
    r = run([CLI] + eargs + ["--out", out])
    partial = os.path.join(out, "responses.partial.jsonl")
    check(r.returncode == 1 and ENOSPC in r.stderr and partial in r.stderr,
          f"eval on a full disk: fails naming the answers file and ENOSPC ({r.stderr.strip()[-300:]})")
    body = open(partial, "rb").read() if os.path.exists(partial) else b""
    kept = body.count(b"\n") - 1
    check(body.endswith(b"\n") and 0 < kept < 40, f"eval on a full disk: {kept} answers kept, every line whole")
    check(not os.path.exists(os.path.join(out, "summary.json")), "eval on a full disk: no summary written")
    check(not leftovers(out), f"eval on a full disk: nothing half-written left ({leftovers(out)})")
    free()
    r = run([CLI] + eargs + ["--out", out])
    check(r.returncode == 0, f"eval: rerun after freeing space exits 0 ({r.stderr.strip()[-300:]})")
    for n in ("responses.jsonl", "summary.json"):
        a, b = os.path.join(out, n), os.path.join(eref, n)
        check(os.path.exists(a) and open(a, "rb").read() == open(b, "rb").read(),
              f"eval: {n} byte-identical to the uninterrupted run's")
finally:
    free()
    subprocess.run(["umount", "-l", mnt])

if FAILS:
    print(f"FAIL: {len(FAILS)} check(s)")
    sys.exit(1)
print("PASS: full disk")
