#!/usr/bin/env python3
"""Plain torch.mm fp32 GFLOP/s at a training shape ([1024,576]x[576,3072]) with the current
OPENBLAS_CORETYPE: run_train.sh uses it to pick the OpenBLAS kernel set for PyTorch."""
import os
import time

import torch

torch.set_num_threads(os.cpu_count() or 1)
a, b = torch.randn(1024, 576), torch.randn(576, 3072)
torch.mm(a, b)
best = 0.0
for _ in range(3):
    t = time.time()
    for _ in range(3):
        torch.mm(a, b)
    best = max(best, 3 * 2 * 1024 * 576 * 3072 / (time.time() - t) / 1e9)
print(f"{best:.1f}")
