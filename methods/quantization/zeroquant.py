"""ZeroQuant (Yao et al., 2022), post-training part: group-wise symmetric weight quantization
and token-wise dynamic activation quantization (no layer-by-layer distillation here)."""
from __future__ import annotations

from torch import nn

from methods.quantization.act_quant import attach_act_quant
from methods.core.arch import weight_matrix
from methods.core.base import TableRow, register
from methods.quantization.base import QuantMethod
from methods.quantization.quantizer import quantize_weight
from methods.core.settings import Bits, GroupSize


@register("zeroquant")
class ZeroQuant(QuantMethod):
    rows = {"table5": TableRow("ZeroQuant", "160", uniform="UQ")}

    def __init__(self, wbits: Bits = 8, abits: Bits = 8, group_size: GroupSize = 64, sym: bool = True,
                 nominal_base: int | None = None):
        super().__init__(wbits, sym, group_size, None, "minmax", nominal_base)
        if not 2 <= abits <= 16:
            raise ValueError(f"abits must be 2..16, got {abits}")
        self.abits = abits

    def compress(self, block_index: int, name: str, layer: nn.Module, stats=None) -> None:
        W = weight_matrix(layer)
        qt = quantize_weight(W, self.spec)
        W.copy_(qt.dequantize().to(W.dtype))
        self.store_codes(layer, qt)
        self.account(block_index, name, *W.shape, stat_bits=16)  # symmetric: a scale, no zero point
        if self.abits < 16:
            attach_act_quant(layer, self.abits, "per_token")

    def summary(self):
        return {**super().summary(), "abits": self.abits, "act_mode": "per_token"}
