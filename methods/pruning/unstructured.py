"""Common ground of the weight-pruning methods: the sparsity target (a fraction, or N:M), its
validation, and their result (the zero fraction of the compressed linears)."""
from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from methods.core.arch import in_features
from methods.core.base import CompressionResult, Kind, LayerwiseMethod
from methods.core.model_facts import ModelSize
from methods.pruning.masks import Sparsity
from methods.core.settings import Fraction


class PruningMethod(LayerwiseMethod):
    """A method that zeroes weights to reach `sparsity` (a fraction, or "N:M")."""

    def __init__(self, sparsity: Fraction | str = 0.5):
        self.target = Sparsity.parse(sparsity)
        self.block_targets: dict[int, Sparsity] = {}  # non-uniform overrides (OWL)

    def target_for(self, block_index: int) -> Sparsity:
        return self.block_targets.get(block_index, self.target)

    def check_model(self, linears: Mapping[str, nn.Module], family=None) -> None:
        if self.target.is_nm:
            bad = [n for n, layer in linears.items() if in_features(layer) % self.target.m]
            if bad:
                raise ValueError(f"N:M sparsity {self.target.label}: input dimension of {bad[0]} "
                                 f"({in_features(linears[bad[0]])}) is not divisible by M={self.target.m}")

    def result(self, before: ModelSize, after: ModelSize) -> CompressionResult:
        if self.target.is_nm:
            return CompressionResult(Kind.NM, self.target.label, before, after, facts=self.summary())
        return CompressionResult(Kind.UNSTRUCTURED, "W", before, after, facts=self.summary())

    def summary(self) -> dict[str, Any]:
        return {"sparsity_target": self.target.ratio, "pattern": self.target.label if self.target.is_nm
                else "unstructured"}
