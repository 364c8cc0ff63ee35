"""Post-training ternarisation (TWN, Li & Liu 2016), the baseline of TernaryBERT's row: every block
linear's weights set to {−α, 0, +α} once, Δ = 0.7·E|w|, α = E{|w| : |w| > Δ}, no training."""
from __future__ import annotations

import torch
from torch import nn

from methods.core.arch import weight_matrix
from methods.core.base import TableRow, register
from methods.quantization.base import QuantMethod
from methods.quantization.codebooks import FP32_BITS
from methods.quantization.trained.fake_quant import TernaryWeight
from methods.core.settings import Positive


@register("twn")
class TWN(QuantMethod):
    rows = {"table4": TableRow("TernaryBERT (post-training)", "174", uniform="UQ")}

    def __init__(self, ratio: Positive = 0.7, nominal_base: int | None = None):
        super().__init__(2, True, -1, "tensor", "minmax", nominal_base)
        self.quantizer = TernaryWeight("tensor", ratio)

    @torch.no_grad()
    def compress(self, block_index: int, name: str, layer: nn.Module, stats=None) -> None:
        W = weight_matrix(layer)
        W.copy_(self.quantizer(W.float()).to(W.dtype))
        self.account(block_index, name, *W.shape, bits=2, n_groups=0, extra_bits=FP32_BITS)

    def summary(self):
        return {**super().summary(), "quant_granularity": "tensor", "quantizer": "TWN (Δ = 0.7·E|w|)"}
