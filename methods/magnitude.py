"""Magnitude pruning: drop the smallest |W| of each weight matrix (or of each N:M group)."""
from __future__ import annotations

from torch import nn

from methods.arch import weight_matrix
from methods.base import apply_mask, register
from methods.masks import mask_for
from methods.pruning import PruningMethod


@register("magnitude")
class Magnitude(PruningMethod):
    def compress(self, block: int, name: str, layer: nn.Module, stats=None) -> None:
        score = weight_matrix(layer).abs().float()
        apply_mask(layer, mask_for(score, self.target_for(block), per_row=False))
