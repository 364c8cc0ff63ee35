"""Movement pruning (Sanh et al. 2020) [122], MvP: scores learned with the weights, the mask the
top-k of the scores, with the sparsity on the cubic schedule and logit distillation.

    W′ = W ⊙ TopK(S, s_t)                         (per matrix, straight-through to S)
    ∂L/∂S = ∂L/∂W′ ⊙ W                            (so S tracks −Σ_t W ⊙ ∂L/∂W′: the movement)
    S: constant initialisation, its own learning rate (lr · score_lr_scale), no weight decay

`hard_movement` replaces the learned scores by the explicit accumulated movement
S = −Σ_t W ⊙ ∂L/∂W′ (Sanh et al.'s hard movement), the masks set at the schedule's steps.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from methods.core.base import TrainingInputs, register
from methods.pruning.trained.gradual import GradualUnstructured
from methods.pruning.trained.weight_masks import MaskedLinear, topk_keep
from methods.core.settings import Fraction, Positive


@register("movement")
class MovementPruning(GradualUnstructured):
    smoke = ({"rate": 0.8, "interval": 2}, {"rate": 0.8, "hard_movement": True, "interval": 2},)
    def __init__(self, rate: Fraction = 0.9, hard_movement: bool = False, score_lr_scale: Positive = 100.0,
                 preset: str = "mvp", label: str = "MvP", ref: str = "122", **kw: Any):
        super().__init__(rate=rate, preset=preset, label=label, ref=ref, **kw)
        self.hard_movement, self.score_lr_scale = hard_movement, score_lr_scale
        self.mode = "fixed" if hard_movement else "topk"

    def mask_options(self) -> dict[str, Any]:
        if self.hard_movement:
            return {"mode": "fixed", "track_movement": True}
        return {"mode": "topk", "score_init": 0.0, "score_lr_scale": self.score_lr_scale}

    def prune(self, masked: dict[str, MaskedLinear], sparsity: float, step: int, inputs: TrainingInputs,
              model: nn.Module) -> None:
        if self.hard_movement:
            for m in masked.values():
                m.mask.copy_(topk_keep(m.movement, sparsity))

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "scores": "accumulated movement" if self.hard_movement else "learned (top-k)"}
