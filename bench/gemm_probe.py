#!/usr/bin/env python3
"""Plain torch.mm fp32 GFLOP/s of [M,576]x[576,3072] (M = argv[1], default 1024: a training
shape; 32 = a decode step of batch 32) with the current OPENBLAS_CORETYPE: the benches use it to
pick the OpenBLAS kernel set for PyTorch (bench/torch_blas.sh pick_coretype)."""
import os
import sys
import time

import torch

torch.set_num_threads(os.cpu_count() or 1)
M = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
reps = max(3, 3 * 1024 // M)
a, b = torch.randn(M, 576), torch.randn(576, 3072)
torch.mm(a, b)
best = 0.0
for _ in range(3):
    t = time.time()
    for _ in range(reps):
        torch.mm(a, b)
    best = max(best, reps * 2 * M * 576 * 3072 / (time.time() - t) / 1e9)
print(f"{best:.1f}")
