"""Common ground of the pruning methods: the sparsity target and its validation."""
from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from methods.arch import in_features
from methods.base import Method
from methods.masks import Sparsity


class PruningMethod(Method):
    """A method that zeroes weights to reach `sparsity` (a fraction, or "N:M")."""

    def __init__(self, sparsity: float | str = 0.5, **knobs: Any):
        super().__init__(sparsity=sparsity, **knobs)
        self.target = Sparsity.parse(sparsity)
        self.block_targets: dict[int, Sparsity] = {}  # non-uniform overrides (OWL)

    def target_for(self, block: int) -> Sparsity:
        return self.block_targets.get(block, self.target)

    def check_model(self, linears: Mapping[str, nn.Module], family=None) -> None:
        if self.target.is_nm:
            bad = [n for n, layer in linears.items() if in_features(layer) % self.target.m]
            if bad:
                raise ValueError(f"N:M sparsity {self.target.label}: input dimension of {bad[0]} "
                                 f"({in_features(linears[bad[0]])}) is not divisible by M={self.target.m}")

    def summary(self) -> dict[str, Any]:
        return {"sparsity_target": self.target.ratio, "pattern": self.target.label if self.target.is_nm
                else "unstructured"}
