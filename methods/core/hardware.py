"""The device's measured ceilings, which every benchmark (kernels, training, evaluation) reports
its achieved fraction against: the dense matmul FLOP/s peak and the memory copy bandwidth.
Measured once per process, not taken from a datasheet; and the one timer they and the kernels'
timings use: torch.utils.benchmark (a warm-up call, then blocked autorange; the median), which
synchronises CUDA around every block. Ground level: it imports nothing of this project."""
from __future__ import annotations

import functools
from typing import Callable

import torch
from torch.utils import benchmark


def seconds(fn: Callable[[], object], min_run_time: float = 0.2) -> float:
    """Median seconds of one `fn()` call."""
    fn()
    return benchmark.Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_run_time).median


@functools.lru_cache(maxsize=None)
def matmul_peak(device: str = "cpu", dtype: torch.dtype = torch.float32, size: int | None = None) -> float:
    """FLOP/s of one square matmul (2·n³ FLOPs) on `device`: n = 2048 on a CPU (past the
    cache-bound sizes), 8192 on a GPU; the median of torch.utils.benchmark's blocked autorange.
    int8: the int8 x int8 -> int32 product (torch._int_mm)."""
    dev = torch.device(device)
    n = size or (8192 if dev.type == "cuda" else 2048)
    if dtype == torch.int8:   # int8 x int8 -> int32, the W8A8 kernels' peak
        a = torch.randint(-128, 128, (n, n), device=dev, dtype=torch.int8)
        b = torch.randint(-128, 128, (n, n), device=dev, dtype=torch.int8)
        return 2 * n ** 3 / seconds(lambda: torch._int_mm(a, b))
    a = torch.randn(n, n, device=dev).to(dtype)
    b = torch.randn(n, n, device=dev).to(dtype)
    return 2 * n ** 3 / seconds(lambda: a @ b)


@functools.lru_cache(maxsize=None)
def copy_bandwidth(device: str = "cpu") -> float:
    """Bytes/s of a device-to-device copy (read + write) of 1 GiB on a GPU, 256 MiB on a CPU
    (well past its caches)."""
    dev = torch.device(device)
    n = (1 << 30 if dev.type == "cuda" else 1 << 28) // 4
    a, b = torch.randn(n, device=dev), torch.empty(n, device=dev)
    return 2 * a.numel() * 4 / seconds(lambda: b.copy_(a))
