"""Model surgery that methods of several families share (block dropping, students built from a
teacher's layers)."""
from __future__ import annotations

from torch import nn


def delete_blocks(model: nn.Module, family, drop: list[int]) -> None:
    """Remove the blocks at the indices `drop` from `model` in place; the config and the layers'
    cache indices follow."""
    blocks = family.blocks(model)
    for i in sorted(drop, reverse=True):
        del blocks[i]
    model.config.num_hidden_layers = len(blocks)
    for i, block in enumerate(blocks):  # keep cache indices consecutive
        for mod in block.modules():
            if hasattr(mod, "layer_idx"):
                mod.layer_idx = i
