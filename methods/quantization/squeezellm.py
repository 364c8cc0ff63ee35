"""SqueezeLLM (Kim et al., 2024): dense-and-sparse non-uniform quantization.

Algorithm (paper §3–4 / reference):
  sparse part: the `outlier_ratio` largest |w| of the layer stay in fp16 (values + indices)
  dense part, per output row: a 2^bits-entry codebook from weighted k-means (Lloyd) over the
  row's weights, each weight weighted by its sensitivity; w ↦ nearest centroid
Sensitivity: the paper's Fisher diagonal needs gradients; here the activation-based proxy
H_jj = Σ x_j² (the same for every row), which the paper lists as the Hessian-diagonal variant.
Storage: codes + one fp16 codebook per row + 32 bits per outlier.
"""
from __future__ import annotations

import torch
from torch import nn

from methods.core.arch import weight_matrix
from methods.core.base import TableRow, register
from methods.quantization.base import QuantMethod
from methods.quantization.quantizer import FP16_BITS
from methods.core.stats import ACT_SQ, LinearStats
from methods.core.settings import Bits, Count, Fraction


def _nearest(w: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centroid for each entry; c is sorted along dim 1 (1-D k-means)."""
    mids = (c[:, 1:] + c[:, :-1]) / 2
    return torch.searchsorted(mids.contiguous(), w.contiguous())


def weighted_kmeans_rows(W: torch.Tensor, weight: torch.Tensor, k: int, iters: int = 30,
                         row_chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row 1-D weighted k-means. W: (rows, cols); weight: (rows, cols) >= 0.
    Returns centroids (rows, k) and assignments (rows, cols)."""
    rows, cols = W.shape
    cents = torch.empty(rows, k, device=W.device)
    assign = torch.empty(rows, cols, dtype=torch.long, device=W.device)
    for r0 in range(0, rows, row_chunk):
        w, a = W[r0:r0 + row_chunk].float(), weight[r0:r0 + row_chunk].float()
        lo, hi = w.min(1, keepdim=True)[0], w.max(1, keepdim=True)[0]
        c = lo + (hi - lo) * torch.linspace(0, 1, k, device=W.device)  # uniform start: deterministic
        for _ in range(iters):
            idx = _nearest(w, c)
            mass = torch.zeros_like(c).scatter_add_(1, idx, a)
            total = torch.zeros_like(c).scatter_add_(1, idx, a * w)
            new = torch.where(mass > 0, total / mass.clamp(min=1e-12), c).sort(1).values
            if torch.equal(new, c):
                break
            c = new
        cents[r0:r0 + row_chunk] = c
        assign[r0:r0 + row_chunk] = _nearest(w, c)
    return cents, assign


@register("squeezellm")
class SqueezeLLM(QuantMethod):
    stats = frozenset({ACT_SQ})
    rows = {"table5": TableRow("SqueezeLLM", "71", uniform="NUQ")}

    def __init__(self, wbits: Bits = 4, outlier_ratio: Fraction = 0.0045, kmeans_iters: Count = 30):
        super().__init__(wbits, False, -1, None, "minmax")
        if not 0 <= outlier_ratio < 1:
            raise ValueError(f"outlier_ratio must lie in [0, 1), got {outlier_ratio}")
        self.outlier_ratio, self.iters = outlier_ratio, kmeans_iters
        self.outliers = 0

    def compress(self, block_index: int, name: str, layer: nn.Module, stats: LinearStats) -> None:
        W = weight_matrix(layer)
        rows, cols = W.shape
        Wf = W.float()
        n_out = int(Wf.numel() * self.outlier_ratio)
        sparse = torch.zeros_like(Wf, dtype=torch.bool)
        if n_out:
            sparse.view(-1)[torch.topk(Wf.abs().flatten(), n_out).indices] = True
        sens = stats.act_sq.float().expand(rows, cols).clone()
        sens[sparse] = 0  # outliers do not pull the codebook
        cents, assign = weighted_kmeans_rows(torch.where(sparse, 0.0, Wf), sens, 2 ** self.spec.bits, self.iters)
        Q = torch.gather(cents, 1, assign)
        Q[sparse] = Wf[sparse]
        W.copy_(Q.to(W.dtype))
        self.outliers += n_out
        self.account(block_index, name, rows, cols, n_groups=1, stat_bits=2 ** self.spec.bits * FP16_BITS,
                     extra_bits=n_out * 2 * FP16_BITS)

    def summary(self):
        return {**super().summary(), "quant_granularity": "codebook-per-row", "outliers": self.outliers,
                "sensitivity": "activation (H_jj)"}
