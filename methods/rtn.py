"""Round-to-nearest weight quantization (GPTQ's `--nearest` baseline): every weight rounded to
its grid point independently; per-channel asymmetric min-max unless configured otherwise."""
from __future__ import annotations

from torch import nn

from methods.arch import weight_matrix
from methods.base import register
from methods.quant_base import QuantMethod
from methods.quantizer import quantize_weight


@register("rtn")
class RTN(QuantMethod):
    def compress(self, block: int, name: str, layer: nn.Module, stats=None) -> None:
        W = weight_matrix(layer)
        W.copy_(quantize_weight(W, self.spec).dequantize().to(W.dtype))
        self.account(block, name, *W.shape)
