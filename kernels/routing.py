"""Routing by shape: a layer whose codes several kernels can multiply runs, at each token count it
is called with, the kernel that was fastest there on this device.

Weight-only kernels are built for decode (a few tokens: the weight's bytes bound the time); at a
long prefill the product is compute-bound and dequantizing the codes once per call, then running
the dense GEMM, can win. `Routed` times every candidate at a few token counts when it is built
(the buckets), keeps the winners only, and sends each call to the winner of the smallest bucket
at or above its token count (the largest bucket beyond). Its `backend` names every choice, so a
timing says which kernel ran.
"""
from __future__ import annotations

import bisect
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from kernels.formats.base import WeightFormat, code_kernels

DEQUANT_DENSE = "dequantize + dense matmul"
ROUTE_TOKENS = (1, 16, 2048)   # decode, a small batch, a prefill window


def dequant_dense(layout: WeightFormat) -> Callable[[torch.Tensor], torch.Tensor]:
    """The product through the layout's dequantized weight, rebuilt in the input's dtype per call
    (so it holds no dense copy between calls)."""
    def fn(x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, layout.dequantize().to(x.dtype))
    return fn


def routes_of(layouts: Sequence[WeightFormat], dequant: bool = True) -> dict[str, tuple[WeightFormat, Callable]]:
    """Each layout's kernel by its backend name, plus the dequantize-then-dense product of the
    first (all of them hold the same codes)."""
    out: dict[str, tuple[WeightFormat, Callable]] = {}
    for layout in layouts:
        out.setdefault(layout.backend, (layout, layout.matmul))
    if dequant and layouts and DEQUANT_DENSE not in out:
        out[DEQUANT_DENSE] = (layouts[0], dequant_dense(layouts[0]))
    return out


def fastest(fns: dict[str, Callable[[torch.Tensor], torch.Tensor]], x: torch.Tensor,
            min_run_time: float) -> tuple[str, dict[str, float]]:
    """The name of the fastest of `fns` on `x`, and every one's median seconds."""
    from methods.core.hardware import seconds
    times = {name: seconds(lambda fn=fn: fn(x), min_run_time) for name, fn in fns.items()}
    return min(times, key=times.get), times


# (kernels, out, in, dtype, device, tokens) -> the winner: layers of one shape are timed once
_CHOICES: dict[tuple, tuple[str, dict[str, float]]] = {}


class Routed(WeightFormat):
    """One linear's codes under several kernels, each call sent to the one fastest at its size
    (timed once per shape and size in a process: a model's layers of one shape share it)."""

    name = "routed"

    def __init__(self, layouts: Sequence[WeightFormat], dtype: torch.dtype, tokens: Sequence[int] = ROUTE_TOKENS,
                 min_run_time: float = 0.01, dequant: bool = True):
        first = layouts[0]
        super().__init__(first.out_features, first.in_features, first.device)
        candidates = routes_of(layouts, dequant)
        self.buckets = sorted(set(int(t) for t in tokens))
        self.seconds: dict[int, dict[str, float]] = {}
        self.choice: dict[int, str] = {}
        for m in self.buckets:
            if len(candidates) == 1:
                self.choice[m] = next(iter(candidates))
                continue
            key = (tuple(candidates), self.out_features, self.in_features, dtype, self.device, m)
            if key not in _CHOICES:
                x = torch.randn(m, self.in_features, device=self.device).to(dtype)
                _CHOICES[key] = fastest({k: fn for k, (_, fn) in candidates.items()}, x, min_run_time)
            self.choice[m], self.seconds[m] = _CHOICES[key]
        kept = set(self.choice.values())
        self.routes = {k: fn for k, (_, fn) in candidates.items() if k in kept}
        # the layout that keeps the codes: the winner at the smallest bucket (decode's)
        self.layout = candidates[self.choice[self.buckets[0]]][0]
        self.layouts = list(dict.fromkeys(candidates[k][0] for k in kept))
        self.backend = "; ".join(f"{m} tokens: {self.choice[m]}" for m in self.buckets)

    def route(self, tokens: int) -> str:
        i = bisect.bisect_left(self.buckets, tokens)
        return self.choice[self.buckets[min(i, len(self.buckets) - 1)]]

    def matmul(self, x):
        return self.routes[self.route(x.shape[0])](x)

    def dequantize(self):
        return self.layout.dequantize()

    @property
    def weight_bytes(self):
        return sum(layout.weight_bytes for layout in self.layouts)


def weight_only_layouts(qt, device: torch.device, dtype: torch.dtype, skip: Sequence[str] = ()) -> list[WeightFormat]:
    """Every weight-only kernel on `device` that takes these codes as they are (repacked, never
    re-quantized: the registered code kernels, kernels.formats.base.code_kernel), but those whose
    backend is in `skip`; layouts with no kernel here are left out (the dequantize-then-dense
    route stands for them)."""
    out: list[WeightFormat] = []
    for build in code_kernels():
        try:
            layout = build(qt, device, dtype)
        except (ValueError, ImportError, RuntimeError, NotImplementedError):
            continue   # codes this kernel does not take, or a library or device it lacks
        if not layout.emulated and layout.backend not in skip:
            out.append(layout)
    return out
