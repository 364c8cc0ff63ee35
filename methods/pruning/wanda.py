"""Wanda (Sun et al., 2023): prune by |W_ij| · ‖X_j‖₂, compared within each output row.

Algorithm (paper, Alg. 1 / reference `prune_wanda`):
  for each block, with calibration inputs X of every linear:
      S = |W| * sqrt(scaler_row)          # scaler_row_j = Σ_tokens x_j² / nsamples
      per output row: zero the k = int(cols * s) smallest S   (or n smallest of each m for N:M)
No weight update; outputs are recomputed with the pruned block before the next one.
"""
from __future__ import annotations

import torch
from torch import nn

from methods.core.arch import weight_matrix
from methods.core.base import TableRow, apply_mask, register
from methods.pruning.masks import mask_for
from methods.pruning.unstructured import PruningMethod
from methods.core.stats import ACT_SQ, LinearStats


def wanda_score(weight: torch.Tensor, act_sq: torch.Tensor) -> torch.Tensor:
    return weight.abs().float() * torch.sqrt(act_sq).reshape(1, -1)


@register("wanda")
class Wanda(PruningMethod):
    stats = frozenset({ACT_SQ})
    rows = {"table3": TableRow("Wanda", "163")}

    def compress(self, block_index: int, name: str, layer: nn.Module, stats: LinearStats) -> None:
        score = wanda_score(weight_matrix(layer), stats.act_sq)
        apply_mask(layer, mask_for(score, self.target_for(block_index), per_row=True))
