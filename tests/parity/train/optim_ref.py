#!/usr/bin/env python3
"""PyTorch reference for our optimisers, LR schedules and gradient clipping.

For each case: write random params / a fixed sequence of random gradients / a tensor layout to a
folder, run the C program (optim_parity) on it, then replay the same steps with
torch.optim.AdamW / torch.optim.SGD, torch.optim.lr_scheduler.LambdaLR (Hugging Face
transformers formulas) or StepLR, and torch.nn.utils.clip_grad_norm_, and compare.
Pass: final params rel. error (L2) <= 1e-6, update (p_final - p_0) rel. error <= 1e-5, lr per step equal, pre-clip norms within 1e-5.
Usage: optim_ref.py OPTIM_PARITY_BINARY TMPDIR"""
import math
import os
import subprocess
import sys

import numpy as np
import torch

torch.set_num_threads(os.cpu_count())

# Layout: (numel, no_decay) per tensor, like weight matrices interleaved with norms/biases.
LAYOUT = [(1536, 0), (64, 1), (2048, 0), (32, 1), (512, 0)]
STEPS = 10


# transformers/optimization.py lr_lambda formulas (get_*_schedule_with_warmup).
def hf_lambda(kind, W, N, num_cycles=0.5):
    def constant_warmup(k):
        return k / max(1.0, W) if k < W else 1.0

    def linear(k):
        if k < W:
            return float(k) / float(max(1, W))
        return max(0.0, float(N - k) / float(max(1, N - W)))

    def cosine(k):
        if k < W:
            return float(k) / float(max(1, W))
        progress = float(k - W) / float(max(1, N - W))
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress)))

    return {"constant": lambda k: 1.0, "constant_with_warmup": constant_warmup,
            "linear": linear, "cosine": cosine}[kind]


CASES = [
    dict(name="adamw_constant_wd", opt="adamw", lr=1e-2, wd=0.1, sched="constant"),
    dict(name="adamw_warmup_clip", opt="adamw", lr=1e-2, wd=0.01, sched="constant_with_warmup",
         warmup=3, clip=1.0),
    dict(name="adamw_cosine_clip", opt="adamw", lr=2e-2, wd=0.05, beta1=0.8, beta2=0.95, eps=1e-6,
         sched="cosine", warmup=2, total=10, clip=0.5),
    dict(name="adamw_linear_decay_all", opt="adamw", lr=1e-2, wd=0.1, sched="linear", warmup=2,
         total=12, decay_all=1),
    dict(name="adamw_step_clip_noop", opt="adamw", lr=1e-2, wd=0.01, sched="step", step_size=3,
         gamma=0.5, clip=1e6),
    dict(name="sgd_momentum_cosine", opt="sgd", lr=5e-2, wd=0.01, momentum=0.9, sched="cosine",
         warmup=1, total=10, clip=2.0),
    dict(name="sgd_nesterov_linear", opt="sgd", lr=5e-2, wd=0.0, momentum=0.9, nesterov=1,
         sched="linear", warmup=0, total=10),
    dict(name="sgd_dampening_step", opt="sgd", lr=5e-2, wd=0.02, momentum=0.5, dampening=0.3,
         sched="step", step_size=4, gamma=0.3),
    dict(name="sgd_plain", opt="sgd", lr=1e-1, wd=0.0, sched="constant"),
]


def run_case(binary, tmp, case, seed):
    d = os.path.join(tmp, case["name"])
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = sum(k for k, _ in LAYOUT)
    p0 = rng.standard_normal(n).astype(np.float32)
    # Gradients of varying scale so clipping is active on some steps only.
    scales = rng.uniform(0.005, 0.05, size=(STEPS, 1))
    grads = (rng.standard_normal((STEPS, n)) * scales).astype(np.float32)
    p0.tofile(os.path.join(d, "params.bin"))
    grads.tofile(os.path.join(d, "grads.bin"))
    with open(os.path.join(d, "layout.txt"), "w") as f:
        for k, nd in LAYOUT:
            f.write(f"{k} {nd}\n")

    keys = ["opt", "lr", "wd", "beta1", "beta2", "eps", "momentum", "dampening", "nesterov",
            "decay_all", "sched", "warmup", "total", "step_size", "gamma", "clip"]
    args = [binary, d] + [f"{k}={case[k]}" for k in keys if k in case] + [f"steps={STEPS}"]
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        print(f"{case['name']}: C program failed: {r.stderr.strip()}")
        return False
    ours = np.fromfile(os.path.join(d, "out_params.bin"), dtype=np.float32)
    log = np.loadtxt(os.path.join(d, "out_log.txt"), ndmin=2)

    # --- PyTorch reference ---
    tensors, off = [], 0
    for k, nd in LAYOUT:
        tensors.append((torch.nn.Parameter(torch.from_numpy(p0[off:off + k].copy())), nd))
        off += k
    wd = case.get("wd", 0.0)
    decay_all = case.get("decay_all", 0)
    groups = [
        {"params": [t for t, nd in tensors if not nd or decay_all], "weight_decay": wd},
        {"params": [t for t, nd in tensors if nd and not decay_all], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    if case["opt"] == "adamw":
        opt = torch.optim.AdamW(groups, lr=case["lr"],
                                betas=(case.get("beta1", 0.9), case.get("beta2", 0.999)),
                                eps=case.get("eps", 1e-8))
    else:
        opt = torch.optim.SGD(groups, lr=case["lr"], momentum=case.get("momentum", 0.0),
                              dampening=case.get("dampening", 0.0),
                              nesterov=bool(case.get("nesterov", 0)))
    if case["sched"] == "step":
        assert case.get("warmup", 0) == 0
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=case["step_size"],
                                                gamma=case["gamma"])
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, hf_lambda(case["sched"], case.get("warmup", 0), case.get("total", 0)))
    params = [t for t, _ in tensors]
    ok = True
    for s in range(STEPS):
        off = 0
        for t in params:
            t.grad = torch.from_numpy(grads[s, off:off + t.numel()].copy())
            off += t.numel()
        if case.get("clip", 0) > 0:
            norm = float(torch.nn.utils.clip_grad_norm_(params, case["clip"]))
        else:
            norm = float(torch.sqrt(sum((t.grad.double() ** 2).sum() for t in params)))
        lr = opt.param_groups[0]["lr"]
        if abs(log[s, 0] - lr) > 1e-7 * max(abs(lr), 1e-12) + 1e-12:
            print(f"{case['name']}: step {s}: lr ours {log[s, 0]:.9g} torch {lr:.9g}")
            ok = False
        if abs(log[s, 1] - norm) > 1e-5 * norm:
            print(f"{case['name']}: step {s}: grad norm ours {log[s, 1]:.9g} torch {norm:.9g}")
            ok = False
        opt.step()
        sched.step()
    ref = torch.cat([t.detach() for t in params]).numpy()
    rel = np.linalg.norm(ours.astype(np.float64) - ref) / np.linalg.norm(ref.astype(np.float64))
    dref = ref.astype(np.float64) - p0
    drel = np.linalg.norm(ours.astype(np.float64) - p0 - dref) / np.linalg.norm(dref)
    good = ok and rel <= 1e-6 and drel <= 1e-5
    status = "ok" if good else "FAIL"
    print(f"{case['name']:24s} params rel.err {rel:.3e}  update rel.err {drel:.3e}  "
          f"|update| {np.linalg.norm(dref):.3e}  {status}")
    return good


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    binary, tmp = sys.argv[1], sys.argv[2]
    os.makedirs(tmp, exist_ok=True)
    results = [run_case(binary, tmp, c, 1000 + i) for i, c in enumerate(CASES)]
    n_ok = sum(results)
    print(f"optim parity: {n_ok}/{len(results)} cases pass")
    return 0 if n_ok == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
