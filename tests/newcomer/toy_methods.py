"""A newcomer's two methods, kept beside the tests (a real one lives under methods/): one
layer-wise, through the sequential engine, and one whole-model. Neither is anything but a toy."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from methods.core.arch import weight_matrix
from methods.core.base import CompressionResult, Kind, ModelMethod, TableRow, apply_mask, register
from methods.core.model_facts import ModelSize
from methods.core.stats import ACT_ABSMAX
from methods.pruning.unstructured import PruningMethod


@register("toy_act_prune")
class ToyActPrune(PruningMethod):
    """Prune the weights with the smallest |w| · max|x| of each matrix (no table row declared)."""

    stats = frozenset({ACT_ABSMAX})

    def compress(self, block_index: int, name: str, layer: nn.Module, stats) -> None:
        score = weight_matrix(layer).abs() * stats.act_absmax.reshape(1, -1)
        k = int(score.numel() * self.target.ratio)
        mask = torch.zeros(score.numel(), dtype=torch.bool)
        mask[torch.argsort(score.flatten())[:k]] = True
        apply_mask(layer, mask.view_as(score))


@register("toy_last_block_drop")
class ToyLastBlockDrop(ModelMethod):
    """Delete the last `n` blocks."""

    physical = True
    rows = {"table3": TableRow("Toy block drop", "", "L")}

    def __init__(self, n: int = 1):
        self.n = n

    def compress_model(self, model: nn.Module, family, calib, device, batch_size: int = 8) -> nn.Module:
        blocks = family.blocks(model)
        for _ in range(self.n):
            del blocks[len(blocks) - 1]
        model.config.num_hidden_layers = len(blocks)
        return model

    def result(self, before: ModelSize, after: ModelSize) -> CompressionResult:
        return CompressionResult(Kind.STRUCTURED, "L", before, after, facts=self.summary())

    def summary(self) -> dict[str, Any]:
        return {"dropped": self.n}
