"""OPTQ / GPTQ (Frantar et al., 2023): quantization with second-order error compensation.

Algorithm (paper, Alg. 1 / reference `fasterquant`):
  H = 2/N Σ x xᵀ + λI,  λ = percdamp · mean(diag H)      (dead inputs: H_jj = 1, W_:j = 0)
  act_order: permute columns by decreasing diag(H)
  Hinv = upper Cholesky factor of H⁻¹
  for each block of B = blocksize columns (lazy batch):
      for each column j:
          at a group boundary: fit scale/zero on the group's current columns (static_groups:
          fitted once on the original weights before any update, in original column order)
          q = quant(w_j);  err = (w_j - q) / [Hinv]_jj
          W[:, j:block_end] -= err · Hinv[j, j:block_end]
      W[:, block_end:] -= Err · Hinv[block, block_end:]
`true_sequential` (on by default, as in the reference's LLaMA runs) quantizes q/k/v, then o,
then up/gate, then down, re-gathering H after each. Two hooks serve OWQ and SpQR: columns kept
in full precision (`keep_cols`), and a per-column outlier rule. Weights that are already zero
(a pruned model) stay exactly zero, as in SparseGPT's joint mode.

The reference fits a mid-block group on W's stale columns (before in-block updates); here a
group is fitted on its up-to-date values. Both agree when group_size is a multiple of blocksize.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from methods.core.arch import weight_matrix
from methods.core.base import TableRow, register
from methods.quantization.base import QuantMethod
from methods.quantization.quantizer import QuantizedTensor, QuantSpec, dequantize, find_params, quantize
from methods.core.hessian import dampened_inverse_cholesky, drop_dead_inputs
from methods.core.obs import Block, obs_sweep
from methods.core.stats import HESSIAN, LinearStats
from methods.core.settings import Bits, Count, Damp, GroupSize

# (w column, q column, Hinv diagonal entry) -> bool mask of outliers kept unquantized
OutlierRule = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
# (permuted W, Hinv Cholesky factor) -> the rule for this layer
OutlierRuleFactory = Callable[[torch.Tensor, torch.Tensor], OutlierRule]


@dataclass
class GPTQResult:
    weight: torch.Tensor           # dequantized weight (outliers / kept columns in full precision)
    n_groups: int                  # statistics per row
    outliers: int = 0
    codes: QuantizedTensor | None = None  # every weight's grid code (outliers and kept columns: the
                                          # code they would have had; the weight tells them apart)


def gptq_quantize(W: torch.Tensor, H: torch.Tensor, spec: QuantSpec, blocksize: int = 128,
                  percdamp: float = 0.01, act_order: bool = False, static_groups: bool = False,
                  keep_cols: torch.Tensor | None = None, outlier_rule: OutlierRuleFactory | None = None,
                  fit_group: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
                  ) -> GPTQResult:
    """Quantize W (out, in) given its input Hessian; returns the dequantized weight."""
    W = W.clone().float()
    rows, cols = W.shape
    zero_mask = W == 0
    fit = fit_group or (lambda x: find_params(x, spec))
    grouped = spec.granularity == "group"
    g = spec.group_size if grouped else cols
    H = drop_dead_inputs(H, W)

    static = [fit(W[:, i:i + g]) for i in range(0, cols, g)] if grouped and static_groups else None
    if spec.granularity == "tensor":
        s, z = find_params(W, spec, per_row=False)
        params = (s.expand(rows, 1), z.expand(rows, 1))
    else:
        params = fit(W) if not grouped else None

    perm = torch.argsort(torch.diag(H), descending=True) if act_order else torch.arange(cols, device=W.device)
    W, H, zero_mask = W[:, perm], H[perm][:, perm], zero_mask[:, perm]
    keep = keep_cols[perm] if keep_cols is not None else torch.zeros(cols, dtype=torch.bool, device=W.device)
    Hinv = dampened_inverse_cholesky(H, percdamp)
    rule = outlier_rule(W, Hinv) if outlier_rule is not None else None

    outliers = 0
    codes = torch.zeros(rows, cols, dtype=torch.uint8, device=W.device)
    fitted: list[tuple[torch.Tensor, torch.Tensor]] = []   # (scale, zero) of each group, in fitting order
    col_group = torch.zeros(cols, dtype=torch.long, device=W.device)

    def quantize_column(block: Block, i: int) -> torch.Tensor:
        nonlocal params, outliers
        col, w, d = block.i1 + i, block.W1[:, i], block.Hinv1[i, i]
        if grouped:
            if static is not None:
                params = static[int(perm[col]) // g]
                col_group[col] = int(perm[col]) // g
            elif col % g == 0:      # the group is fitted on its columns' up-to-date values
                params = fit(torch.cat([block.W1[:, i:], W[:, block.i2:]], 1)[:, :g])
                fitted.append(params)
            if static is None:
                col_group[col] = len(fitted) - 1
        c = quantize(w.unsqueeze(1), params[0], params[1], spec.maxq).flatten()
        c[zero_mask[:, col]] = params[1].flatten()[zero_mask[:, col]]  # the code of 0 (ranges hold 0)
        codes[:, col] = c.to(torch.uint8)
        if keep[col]:
            q = w.clone()
        else:
            q = dequantize(c.unsqueeze(1), params[0], params[1]).flatten()
            if rule is not None:
                out = rule(w, q, d)
                q[out] = w[out]
                outliers += int(out.sum())
        q[zero_mask[:, col]] = 0
        return q

    obs_sweep(W, Hinv, blocksize, quantize_column)
    inv = torch.argsort(perm)
    W = W[:, inv]
    n_groups = -(-cols // g) if grouped else (1 if spec.granularity == "channel" else 0)
    if grouped:
        stats = static if static is not None else fitted
        scale, zero = torch.cat([p[0] for p in stats], 1), torch.cat([p[1] for p in stats], 1)
        g_idx = col_group[inv]
        trivial = torch.equal(g_idx, torch.arange(cols, device=W.device) // g)
        qt = QuantizedTensor(codes[:, inv], scale, zero, g, spec.bits, None if trivial else g_idx)
    else:
        qt = QuantizedTensor(codes[:, inv], params[0].expand(rows, 1).contiguous(),
                             params[1].expand(rows, 1).contiguous(), cols, spec.bits)
    return GPTQResult(W, n_groups, outliers, qt)


@register("gptq")
class GPTQ(QuantMethod):
    stats = frozenset({HESSIAN})
    rows = {"table5": TableRow("OPTQ", "42", uniform="UQ"), "table4": TableRow("GPTQ", "42", uniform="UQ")}

    def __init__(self, wbits: Bits = 4, sym: bool = False, group_size: GroupSize | None = -1, act_order: bool = False,
                 static_groups: bool = False, true_sequential: bool = True, blocksize: Count = 128,
                 percdamp: Damp = 0.01, clip: str = "minmax", granularity: str | None = None,
                 nominal_base: int | None = None):
        super().__init__(wbits, sym, group_size, granularity, clip, nominal_base)
        self.act_order, self.static_groups = act_order, static_groups
        self.true_sequential, self.blocksize, self.percdamp = true_sequential, blocksize, percdamp

    def compress(self, block_index: int, name: str, layer: nn.Module, stats: LinearStats) -> None:
        W = weight_matrix(layer)
        res = gptq_quantize(W, stats.hessian, self.spec, self.blocksize, self.percdamp, self.act_order,
                            self.static_groups)
        W.copy_(res.weight.to(W.dtype))
        self.store_codes(layer, res.codes)
        self.account(block_index, name, *W.shape, n_groups=res.n_groups)
