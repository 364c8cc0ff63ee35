"""OWL (Yin et al., 2024): outlier-weighted layer-wise sparsity on top of Wanda or SparseGPT.

Algorithm (paper §4 / reference `prune_wanda_outlier`):
  on the dense model, per block l: A = |W| · ‖X‖ over all its linears;
      D_l = 100 · |{a ∈ A : a > M · mean(A)}| / |A|             (layer outlier distribution)
  r = (D - min D) / (max D - min D) · 2λ;   r = r - mean(r) + (1 - s)    (density per block)
  block l is pruned at sparsity 1 - r_l by the base method; the mean stays s.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from methods.core.arch import weight_matrix
from methods.core.base import TableRow, register
from methods.pruning.masks import Sparsity
from methods.pruning.unstructured import PruningMethod
from methods.pruning.sparsegpt import SparseGPT
from methods.core.stats import ACT_SQ
from methods.pruning.wanda import Wanda, wanda_score
from methods.core.settings import Fraction


def outlier_ratio(scores: list[torch.Tensor], M: float) -> float:
    """Percentage of scores above M times their mean (OWL's layer outlier distribution)."""
    flat = torch.cat([s.flatten() for s in scores])
    return float((flat > flat.mean() * M).sum()) / flat.numel() * 100


def layer_sparsities(ratios: list[float], sparsity: float, lamda: float) -> list[float]:
    """Map outlier ratios to block sparsities in [s - λ, s + λ] whose mean is s."""
    d = torch.tensor(ratios, dtype=torch.float64)
    spread = d.max() - d.min()
    r = (d - d.min()) / spread * (2 * lamda) if spread > 0 else torch.zeros_like(d)
    density = r - r.mean() + (1 - sparsity)
    return (1 - density).tolist()


class _OWL(PruningMethod):
    plans = True

    def __init__(self, sparsity: Fraction | str = 0.7, M: float = 5.0, lamda: float = 0.08, **base: Any):
        if isinstance(sparsity, str) and ":" in sparsity:
            raise ValueError("OWL allocates unstructured layer-wise sparsity; N:M is not supported")
        self.base = self.base_cls(sparsity, **base)
        super().__init__(sparsity)
        if not 0 <= lamda <= min(self.target.ratio, 1 - self.target.ratio):
            raise ValueError(f"OWL lamda={lamda} must keep block sparsities inside [0, 1)")
        self.M, self.lamda = M, lamda
        self.ratios: list[float] = []

    @property
    def stats(self) -> frozenset[str]:  # type: ignore[override]
        return self.base.stats

    def plan(self, session) -> None:
        def visit(i: int, block: nn.Module, inputs) -> None:
            linears = session.family.linears(block)
            found = session.gather(block, linears, frozenset({ACT_SQ}), inputs)
            self.ratios.append(outlier_ratio(
                [wanda_score(weight_matrix(layer), found[n].act_sq) for n, layer in linears.items()], self.M))

        session.walk(visit, desc="owl[outliers]")
        for i, s in enumerate(layer_sparsities(self.ratios, self.target.ratio, self.lamda)):
            self.base.block_targets[i] = Sparsity(s)

    def compress(self, block_index: int, name: str, layer: nn.Module, stats) -> None:
        self.base.compress(block_index, name, layer, stats)

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "outlier_ratio_per_block": self.ratios,
                "sparsity_per_block_target": [t.ratio for _, t in sorted(self.base.block_targets.items())]}


@register("owl_wanda")
class OWLWanda(_OWL):
    base_cls = Wanda
    rows = {"table3": TableRow("Wanda+OWL", "129")}


@register("owl_sparsegpt")
class OWLSparseGPT(_OWL):
    base_cls = SparseGPT
    rows = {"table3": TableRow("SparseGPT+OWL", "129")}
