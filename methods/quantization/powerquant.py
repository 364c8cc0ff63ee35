"""PowerQuant (Yvinec et al., 2023): non-uniform quantization through a power function,
Ŵ = sign(q)·|q|^(1/a), q = Q(sign(W)·|W|^a) with Q symmetric uniform per output channel; `a` from a
grid, the one with the least ‖W − Ŵ‖²."""
from __future__ import annotations

import torch
from torch import nn

from methods.core.arch import weight_matrix
from methods.core.base import TableRow, register
from methods.quantization.base import QuantMethod
from methods.quantization.quantizer import FP16_BITS, QuantSpec, quantize_weight
from methods.core.settings import Bits


def power_quantize(W: torch.Tensor, bits: int, a: float) -> torch.Tensor:
    """sign(q)·|q|^(1/a) with q the symmetric per-channel quantization of sign(W)·|W|^a."""
    spec = QuantSpec(bits=bits, sym=True, granularity="channel")
    t = torch.sign(W.float()) * W.float().abs().pow(a)
    q = quantize_weight(t, spec).dequantize()
    return torch.sign(q) * q.abs().pow(1 / a)


@register("powerquant")
class PowerQuant(QuantMethod):
    rows = {"table4": TableRow("PowerQuant", "167", uniform="NUQ")}

    def __init__(self, wbits: Bits = 4, grid: list[float] | None = None, nominal_base: int | None = None):
        grid = grid or [round(0.05 * i, 2) for i in range(4, 21)]  # a in 0.20 … 1.00 (1.0 = uniform)
        super().__init__(wbits, True, -1, "channel", "minmax", nominal_base)
        self.grid = grid
        self.exponents: dict[str, float] = {}

    def compress(self, block_index: int, name: str, layer: nn.Module, stats=None) -> None:
        W = weight_matrix(layer)
        errs = {a: float((power_quantize(W, self.spec.bits, a) - W.float()).pow(2).sum()) for a in self.grid}
        a = min(errs, key=errs.get)
        self.exponents[f"{block_index}.{name}"] = a
        W.copy_(power_quantize(W, self.spec.bits, a).to(W.dtype))
        self.account(block_index, name, *W.shape, stat_bits=FP16_BITS)

    def summary(self):
        return {**super().summary(), "quant_granularity": "channel (power-function grid)", "exponents": self.exponents}
