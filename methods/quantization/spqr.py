"""SpQR (Dettmers et al., 2024): sparse-quantized representation.

Algorithm (paper Alg. 1 / reference `SPQRUtil.quantize`):
  OPTQ over columns in act-order, with small groups (β₁ = 16 inputs) whose scale and zero
  are themselves quantized (3 bits, in groups of β₂ = 16 output rows, fp16 second-level stats);
  a weight is an outlier, kept in fp16, when its OBS error ((w − q) / [Hinv]_jj)² exceeds
  τ · mean_j(Var_rows(W_:,j) / [Hinv]_jj²); an outlier contributes no error to the updates.
Storage: codes + 2·3-bit group stats + second-level fp16 pairs + 32 bits per outlier
(16-bit value and 16-bit column index, CSR rows).
"""
from __future__ import annotations

import torch
from torch import nn

from methods.core.arch import weight_matrix
from methods.core.base import TableRow, register
from methods.quantization.gptq import gptq_quantize
from methods.quantization.base import QuantMethod
from methods.quantization.quantizer import FP16_BITS, QuantSpec, fake_quantize, find_params
from methods.core.stats import HESSIAN, LinearStats
from methods.core.settings import Bits, Count, Damp, GroupSize


def quantize_stat(v: torch.Tensor, bits: int, group: int) -> torch.Tensor:
    """Second-level quantization of a (rows, 1) statistic: `bits`-bit asymmetric per `group` rows."""
    spec = QuantSpec(bits=bits, sym=False, granularity="channel")
    flat = v.flatten()
    pad = (-flat.numel()) % group
    chunks = torch.cat([flat, flat[-1:].expand(pad)]).view(-1, group)
    s, z = find_params(chunks, spec)
    return fake_quantize(chunks, s, z, spec.maxq).flatten()[: flat.numel()].view_as(v)


@register("spqr")
class SpQR(QuantMethod):
    stats = frozenset({HESSIAN})
    rows = {"table5": TableRow("SpQR", "35", uniform="UQ")}

    def __init__(self, wbits: Bits = 3, group_size: GroupSize = 16, stat_bits: Bits = 3, stat_group: GroupSize = 16,
                 outlier_threshold: float = 0.2, act_order: bool = True, true_sequential: bool = True,
                 blocksize: Count = 128, percdamp: Damp = 0.01):
        super().__init__(wbits, False, group_size, None, "minmax")
        self.stat_bits, self.stat_group, self.tau = stat_bits, stat_group, outlier_threshold
        self.act_order, self.true_sequential = act_order, true_sequential
        self.blocksize, self.percdamp = blocksize, percdamp
        self.outliers = 0

    def _fit(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, z = find_params(x, self.spec)
        return (quantize_stat(s, self.stat_bits, self.stat_group).clamp(min=1e-8),
                quantize_stat(z, self.stat_bits, self.stat_group))

    def _outlier_rule(self, W: torch.Tensor, Hinv: torch.Tensor):
        d2 = torch.diag(Hinv).pow(2)
        threshold = self.tau * float((W.var(dim=0) / d2).mean())
        return lambda w, q, d: ((w - q) / d).pow(2) > threshold

    def compress(self, block_index: int, name: str, layer: nn.Module, stats: LinearStats) -> None:
        W = weight_matrix(layer)
        rows, cols = W.shape
        res = gptq_quantize(W, stats.hessian, self.spec, self.blocksize, self.percdamp, self.act_order,
                            outlier_rule=self._outlier_rule if self.tau > 0 else None, fit_group=self._fit)
        W.copy_(res.weight.to(W.dtype))
        self.store_codes(layer, res.codes)   # the fp16 outliers differ from their codes' values
        self.outliers += res.outliers
        per_group_stat = 2 * self.stat_bits + 4 * FP16_BITS / self.stat_group
        self.account(block_index, name, rows, cols, n_groups=res.n_groups, stat_bits=per_group_stat,
                     extra_bits=res.outliers * 2 * FP16_BITS)

    def summary(self):
        weights = self.totals()[1]
        return {**super().summary(), "outliers": self.outliers,
                "outlier_fraction": self.outliers / weights if weights else 0.0}
