"""Round-to-nearest weight quantization (GPTQ's `--nearest` baseline): every weight rounded to
its grid point independently; per-channel asymmetric min-max unless configured otherwise."""
from __future__ import annotations

from torch import nn

from methods.core.arch import weight_matrix
from methods.core.base import TableRow, register
from methods.quantization.base import QuantMethod
from methods.quantization.quantizer import quantize_weight


@register("rtn")
class RTN(QuantMethod):
    rows = {"table5": TableRow("RTN", uniform="UQ"), "table4": TableRow("RTN", uniform="UQ")}

    def compress(self, block_index: int, name: str, layer: nn.Module, stats=None) -> None:
        W = weight_matrix(layer)
        qt = quantize_weight(W, self.spec)
        W.copy_(qt.dequantize().to(W.dtype))
        self.store_codes(layer, qt)
        self.account(block_index, name, *W.shape)
