"""The device's measured ceilings: the matmul FLOP/s peak every benchmark (kernels, training,
evaluation) reports its achieved fraction against. Measured, not taken from a datasheet."""
from __future__ import annotations

import functools
import time

import torch


@functools.lru_cache(maxsize=None)
def matmul_peak(device: str = "cpu", dtype: torch.dtype = torch.float32, size: int | None = None,
                repeats: int = 5) -> float:
    """Best-of-`repeats` FLOP/s of one square matmul (2·n³ FLOPs) on `device`, measured once per
    process. n defaults to 2048 on a CPU (past the cache-bound sizes) and 8192 on a GPU."""
    dev = torch.device(device)
    n = size or (8192 if dev.type == "cuda" else 2048)
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 1):  # the first one warms up
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        a @ b
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best
