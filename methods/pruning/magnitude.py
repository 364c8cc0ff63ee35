"""Magnitude pruning: drop the smallest |W| of each weight matrix (or of each N:M group)."""
from __future__ import annotations

from torch import nn

from methods.core.arch import weight_matrix
from methods.core.base import TableRow, apply_mask, register
from methods.pruning.masks import mask_for
from methods.pruning.unstructured import PruningMethod


@register("magnitude")
class Magnitude(PruningMethod):
    rows = {"table3": TableRow("Magnitude"), "table2": TableRow("Magnitude")}

    def compress(self, block_index: int, name: str, layer: nn.Module, stats=None) -> None:
        score = weight_matrix(layer).abs().float()
        apply_mask(layer, mask_for(score, self.target_for(block_index), per_row=False))
