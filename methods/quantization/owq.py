"""OWQ (Lee et al., 2024): outlier-aware weight quantization.

Algorithm (paper §3 / reference):
  sensitivity of input column j:  λ_j · ‖W_:,j − Q(W)_:,j‖²,  λ_j = H_jj   (RTN perturbation)
  the k most sensitive ("weak") columns stay in fp16, k = max(1, round(extra_bits · cols / 16))
  per-channel ranges are fitted on the other columns, which OPTQ quantizes; the weak columns
  keep absorbing OPTQ's error updates.
The rate counts the fp16 columns (16 bits per entry plus a 32-bit column index).
"""
from __future__ import annotations

import torch
from torch import nn

from methods.core.arch import weight_matrix
from methods.core.base import TableRow, register
from methods.quantization.gptq import gptq_quantize
from methods.quantization.base import QuantMethod
from methods.quantization.quantizer import FP16_BITS, find_params, quantize_weight
from methods.core.stats import HESSIAN, LinearStats
from methods.core.settings import Bits, Count, Damp, GroupSize


def weak_columns(W: torch.Tensor, H: torch.Tensor, spec, k: int) -> torch.Tensor:
    """Boolean mask of the k input columns with the largest H_jj · ‖ΔW_:,j‖²."""
    W = W.float()
    delta = W - quantize_weight(W, spec).dequantize()
    sens = torch.diag(H).float() * delta.pow(2).sum(0)
    mask = torch.zeros(W.shape[1], dtype=torch.bool, device=W.device)
    if k:
        mask[torch.topk(sens, k).indices] = True
    return mask


@register("owq")
class OWQ(QuantMethod):
    stats = frozenset({HESSIAN})
    rows = {"table5": TableRow("OWQ", "86", uniform="UQ")}

    def __init__(self, wbits: Bits = 4, extra_bits: float = 0.01, group_size: GroupSize | None = -1, sym: bool = False,
                 true_sequential: bool = True, act_order: bool = False, blocksize: Count = 128,
                 percdamp: Damp = 0.01):
        super().__init__(wbits, sym, group_size, None, "minmax")
        if extra_bits < 0:
            raise ValueError(f"extra_bits must be >= 0, got {extra_bits}")
        self.extra_bits, self.true_sequential, self.act_order = extra_bits, true_sequential, act_order
        self.blocksize, self.percdamp = blocksize, percdamp
        self.fp16_columns = 0

    def compress(self, block_index: int, name: str, layer: nn.Module, stats: LinearStats) -> None:
        W = weight_matrix(layer)
        rows, cols = W.shape
        # at least one weak column whenever extra bits are allowed (narrow layers would round to none)
        k = min(cols, max(1, round(self.extra_bits * cols / FP16_BITS))) if self.extra_bits > 0 else 0
        H = stats.hessian
        keep = weak_columns(W, H, self.spec, k)
        fit = (lambda x: find_params(x[:, ~keep] if x.shape[1] == cols else x, self.spec))
        res = gptq_quantize(W, H, self.spec, self.blocksize, self.percdamp, self.act_order,
                            keep_cols=keep, fit_group=fit)
        W.copy_(res.weight.to(W.dtype))
        self.store_codes(layer, res.codes)   # the kept fp16 columns differ from their codes' values
        self.fp16_columns += k
        self.account(block_index, name, rows, cols, n_groups=res.n_groups,
                     extra_bits=k * (rows * FP16_BITS + 32) - k * rows * self.spec.bits)

    def summary(self):
        return {**super().summary(), "fp16_columns": self.fp16_columns}
