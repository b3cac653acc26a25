#!/usr/bin/env python3
"""Our LR schedules vs torch.optim.lr_scheduler (LambdaLR with the transformers
get_*_schedule_with_warmup formulas; StepLR) over many steps, driven as HF does
(optimizer.step(); scheduler.step()). Pass: |ours - torch| <= 1e-12 * base_lr at every step.
Usage: sched_ref.py SCHED_DUMP_BINARY"""
import math
import subprocess
import sys

import torch


def hf(kind, W, N, c):  # transformers/optimization.py
    def warm(k):
        return float(k) / float(max(1, W))

    if kind == "constant":
        return lambda k: 1.0
    if kind == "constant_with_warmup":
        return lambda k: warm(k) if k < W else 1.0
    if kind == "linear":
        return lambda k: warm(k) if k < W else max(0.0, float(N - k) / float(max(1, N - W)))
    if kind == "cosine":
        def f(k):
            if k < W:
                return warm(k)
            p = float(k - W) / float(max(1, N - W))
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(c) * 2.0 * p)))
        return f
    raise ValueError(kind)


CASES = [  # kind, base_lr, warmup, total, K, num_cycles, step_size, gamma
    ("constant", 2e-5, 0, 0, 50, 0.5, 1, 0.1),
    ("constant_with_warmup", 1e-4, 7, 0, 60, 0.5, 1, 0.1),
    ("linear", 5e-5, 10, 200, 230, 0.5, 1, 0.1),
    ("linear", 5e-5, 0, 37, 50, 0.5, 1, 0.1),
    ("cosine", 1e-3, 25, 500, 520, 0.5, 1, 0.1),
    ("cosine", 1e-3, 0, 100, 130, 1.5, 1, 0.1),
    ("step", 1e-2, 0, 0, 100, 0.5, 7, 0.5),
]


def main():
    binary = sys.argv[1]
    bad = 0
    for kind, lr, W, N, K, c, ss, g in CASES:
        out = subprocess.run([binary, kind, repr(lr), str(W), str(N), str(K), repr(c), str(ss),
                              repr(g)], capture_output=True, text=True, check=True).stdout
        ours = [float(x) for x in out.split()]
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([p], lr=lr)
        if kind == "step":
            sch = torch.optim.lr_scheduler.StepLR(opt, step_size=ss, gamma=g)
        else:
            sch = torch.optim.lr_scheduler.LambdaLR(opt, hf(kind, W, N, c))
        worst = 0.0
        for k in range(K):
            ref = opt.param_groups[0]["lr"]
            worst = max(worst, abs(ours[k] - ref))
            opt.step()
            sch.step()
        ok = len(ours) == K and worst <= 1e-12 * lr
        bad += not ok
        print(f"{kind:22s} W={W:<3d} N={N:<4d} steps={K:<4d} max|diff| = {worst:.2e}  "
              f"{'ok' if ok else 'FAIL'}")
    print(f"schedule parity: {len(CASES) - bad}/{len(CASES)} pass")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
