"""NF4 (Dettmers et al., 2023, QLoRA's data type), post-training, no fine-tuning.

Weights in blocks of 64 (flattened, row-major) are scaled by their absmax and rounded to the
nearest of the 16 NormalFloat levels (quantiles of N(0, 1), exact zero included). Double
quantization: the fp32 absmax constants, minus their mean, are quantized to 8 bits in blocks
of 256 with an fp32 scale each (QLoRA uses an 8-bit float there; this uses 8-bit integers).
Storage: 4 + 8/64 + 32/(64·256) = 4.127 bits per weight (32/64 = 0.5 extra without DQ).
"""
from __future__ import annotations

import torch
from torch import nn

from methods.core.arch import weight_matrix
from methods.core.base import TableRow, register
from methods.quantization.base import QuantMethod
from methods.core.settings import Count

NF4_LEVELS = torch.tensor([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0])


def double_quantize(absmax: torch.Tensor, block: int = 256) -> torch.Tensor:
    """absmax constants after 8-bit blockwise quantization of (absmax - mean)."""
    mean = absmax.mean()
    c = absmax - mean
    pad = (-c.numel()) % block
    chunks = torch.cat([c, c.new_zeros(pad)]).view(-1, block)
    scale = chunks.abs().amax(1, keepdim=True).clamp(min=1e-12) / 127
    deq = (torch.clamp(torch.round(chunks / scale), -127, 127) * scale).flatten()[: c.numel()]
    return deq + mean


def nf4_quantize(W: torch.Tensor, blocksize: int = 64, double_quant: bool = True,
                 dq_blocksize: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(dequantized W, 4-bit codes) for a weight of any shape."""
    flat = W.float().flatten()
    pad = (-flat.numel()) % blocksize
    blocks = torch.cat([flat, flat.new_zeros(pad)]).view(-1, blocksize)
    absmax = blocks.abs().amax(1).clamp(min=1e-12)
    levels = NF4_LEVELS.to(W.device)
    codes = (blocks / absmax[:, None]).unsqueeze(-1).sub(levels).abs().argmin(-1)
    if double_quant:
        absmax = double_quantize(absmax, dq_blocksize)
    deq = (levels[codes] * absmax[:, None]).flatten()[: flat.numel()]
    return deq.view_as(W), codes.flatten()[: flat.numel()].view(W.shape).to(torch.uint8)


@register("nf4")
class NF4(QuantMethod):
    rows = {"table5": TableRow("NF4", "34", uniform="NUQ")}

    def __init__(self, blocksize: Count = 64, double_quant: bool = True, dq_blocksize: Count = 256):
        super().__init__(4, True, blocksize, None, "minmax")
        self.blocksize, self.double_quant, self.dq_blocksize = blocksize, double_quant, dq_blocksize

    def compress(self, block_index: int, name: str, layer: nn.Module, stats=None) -> None:
        W = weight_matrix(layer)
        deq, _ = nf4_quantize(W, self.blocksize, self.double_quant, self.dq_blocksize)
        W.copy_(deq.to(W.dtype))
        n = W.numel()
        blocks = -(-n // self.blocksize)
        const_bits = blocks * 8 + -(-blocks // self.dq_blocksize) * 32 + 32 if self.double_quant else blocks * 32
        self.account(block_index, name, *W.shape, n_groups=0, extra_bits=const_bits)

    def summary(self):
        return {**super().summary(), "quant_granularity": "nf4-block", "group_size": self.blocksize,
                "double_quant": self.double_quant}
