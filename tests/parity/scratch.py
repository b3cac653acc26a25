"""scratch.py - scratch folders of the parity drivers, under SAFETUNE_TEST_TMP.

made(path) records a folder a driver wrote; finish(ok) removes the recorded folders when the
driver passed (kept on failure, and always with SAFETUNE_KEEP_TESTTMP=1) and exits 0 or 1.
The SmolLM2 checkpoints and optimiser states the drivers write come to ~9 GB per build kind
when kept; removing them as each driver passes keeps a suite's peak disk use to a few GB."""
import os
import shutil
import sys

_made = []


def made(path):
    """Record PATH (a folder this driver created) for removal by finish(True); returns PATH."""
    if path not in _made:
        _made.append(path)
    return path


def finish(ok):
    """Exit 0 if OK else 1; on 0 remove the recorded folders unless SAFETUNE_KEEP_TESTTMP is set."""
    if ok and not os.environ.get("SAFETUNE_KEEP_TESTTMP"):
        for p in _made:
            shutil.rmtree(p, ignore_errors=True)
    elif _made:
        print("scratch kept:", " ".join(_made))
    sys.exit(0 if ok else 1)
