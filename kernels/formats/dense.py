"""dense: the weight as it is, through F.linear: the baseline, and the format of structured
pruning, low rank and distillation, whose smaller dense matrices are their speed. Its two
benchmark forms: `neurons-<p>` (p% of the output rows removed: heads and neurons) and
`lowrank-<p>` (a factorisation keeping p% of the parameters)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kernels.formats.base import Case, KernelFormat, WeightFormat, numbered, register_format

DENSE_KINDS = ("structured", "low_rank", "distilled", "dense")


class Dense(WeightFormat):
    def __init__(self, weight: torch.Tensor):
        super().__init__(*weight.shape, weight.device)
        self.weight = weight

    def matmul(self, x):
        return F.linear(x, self.weight)

    def dequantize(self):
        return self.weight.float()

    @property
    def weight_bytes(self):
        return self.weight.numel() * self.weight.element_size()


@register_format
@dataclass(frozen=True)
class DenseFormat(KernelFormat):
    name = "dense"
    order = 70
    swaps = False

    @classmethod
    def for_record(cls, comp):
        return cls() if comp.get("kind") in DENSE_KINDS else None


@dataclass(frozen=True)
class SmallerDense(KernelFormat):
    """A benchmark form of dense: `<name>-<percent>`."""

    swaps = False
    percent: int = 50

    @property
    def key(self) -> str:
        return f"{self.name}-{self.percent}"

    @classmethod
    def parse(cls, key):
        pct = numbered(key, cls.name)
        return None if pct is None else cls(pct)


@register_format
@dataclass(frozen=True)
class NeuronsFormat(SmallerDense):
    """p% of the output rows removed (heads / neurons): a smaller dense matrix."""

    name = "neurons"

    def case(self, W, dtype):
        n, k = W.shape
        keep = n - int(n * self.percent / 100)
        fmt = Dense(W[:keep].to(dtype))
        return Case(fmt.matmul, W[:keep], fmt.weight_bytes, 2 * keep * k, {"bandwidth": n / keep, "flops": n / keep},
                    "F.linear (smaller matrix)")


@register_format
@dataclass(frozen=True)
class LowRankFormat(SmallerDense):
    """Rank r keeping p% of the parameters, (n + k)·r = p·n·k: two smaller dense matrices."""

    name = "lowrank"

    def case(self, W, dtype):
        n, k = W.shape
        r = max(1, int(n * k * self.percent / 100 / (n + k)))
        A, B = (W[:r] / W.shape[1] ** 0.5).to(dtype), (W[:, :r] / r ** 0.5).to(dtype)
        return Case(lambda x: F.linear(F.linear(x, A), B), B.float() @ A.float(), (n + k) * r * dtype.itemsize,
                    2 * (n + k) * r, {"bandwidth": n * k / ((n + k) * r), "flops": n * k / ((n + k) * r)},
                    "F.linear x2 (factors)")
