"""Facts about a model's size, measured the same way before and after compression."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from methods.core.arch import Family, weight_matrix


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def embedding_params(model: nn.Module) -> int:
    """Input embeddings plus an untied output embedding."""
    emb = model.get_input_embeddings().weight.numel()
    out = model.get_output_embeddings()
    tied = out is not None and out.weight is model.get_input_embeddings().weight
    return emb + (0 if out is None or tied else out.weight.numel())


@dataclass(frozen=True)
class ModelSize:
    params: int
    embedding_params: int
    linear_weights: int              # weights of the compressible linears inside the blocks
    linear_zeros: int
    per_block_sparsity: tuple[float, ...]

    @property
    def linear_sparsity(self) -> float:
        return self.linear_zeros / self.linear_weights if self.linear_weights else 0.0

    @property
    def model_sparsity(self) -> float:
        return self.linear_zeros / self.params


def measure(model: nn.Module, family: Family) -> ModelSize:
    """Parameters, embeddings, and the zero fraction of the blocks' linears (per block and overall)."""
    zeros = total = 0
    per_block = []
    for block in family.blocks(model):
        bz = bt = 0
        for layer in family.linears(block).values():
            w = weight_matrix(layer)
            bz += int((w == 0).sum())
            bt += w.numel()
        per_block.append(bz / bt if bt else 0.0)
        zeros, total = zeros + bz, total + bt
    return ModelSize(count_params(model), embedding_params(model), total, zeros, tuple(per_block))
