"""Q8BERT (Zafrir et al., 2019), post-training, the baseline of the QAT row (`q8bert_qat`):
symmetric linear 8-bit weights with one scale per weight matrix (max|W| / 127), and 8-bit
symmetric activations with calibrated static ranges."""
from __future__ import annotations

import torch
from torch import nn

from methods.core.arch import weight_matrix
from methods.core.base import TableRow, register
from methods.core.stats import ACT_ABSMAX
from methods.quantization.act_quant import attach_act_quant
from methods.quantization.base import QuantMethod
from methods.quantization.quantizer import QuantizedTensor
from methods.quantization.codebooks import FP32_BITS
from methods.core.settings import Bits


@register("q8bert")
class Q8BERT(QuantMethod):
    stats = frozenset({ACT_ABSMAX})
    rows = {"table4": TableRow("Q8BERT (post-training)", "169", uniform="UQ")}

    def __init__(self, wbits: Bits = 8, abits: Bits = 8, nominal_base: int | None = None):
        super().__init__(wbits, True, -1, "tensor", "minmax", nominal_base)
        self.abits = abits

    def table_row(self, table: str) -> TableRow | None:
        row = super().table_row(table)
        if row is not None and self.abits >= 16:  # the weights-only variant, told apart from W8A8
            return TableRow("Q8BERT (weights only)", row.ref, row.granularity, row.uniform, row.cost)
        return row

    def compress(self, block_index: int, name: str, layer: nn.Module, stats) -> None:
        W = weight_matrix(layer)
        qmax = 2 ** (self.spec.bits - 1) - 1
        scale = W.abs().max().clamp(min=1e-8) / qmax
        q = torch.clamp(torch.round(W / scale), -qmax, qmax)
        W.copy_((q * scale).to(W.dtype))
        rows, zero = W.shape[0], qmax + 1   # one symmetric scale for the matrix: codes q + 2^(b-1)
        self.store_codes(layer, QuantizedTensor((q + zero).to(torch.uint8), scale.reshape(1, 1).expand(rows, 1).float(),
                                                torch.full((rows, 1), float(zero)), W.shape[1], self.spec.bits))
        self.account(block_index, name, *W.shape, n_groups=0, extra_bits=FP32_BITS)
        attach_act_quant(layer, self.abits, "per_tensor", float(stats.act_absmax.max()))

    def summary(self):
        return {**super().summary(), "abits": self.abits, "act_mode": "per_tensor"}
