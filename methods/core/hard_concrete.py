"""Hard concrete gates (Louizos et al. 2018): a differentiable relaxation of L0 masks, the gate of
Wang et al.'s factorised pruning (and of CoFi-style structured pruning)."""
from __future__ import annotations

import math

import torch
from torch import nn
from methods.core.settings import Positive


class HardConcrete(nn.Module):
    """`n` gates z ∈ [0, 1]: stretched (l, r) and clamped binary-concrete samples in training, their
    deterministic value in evaluation. `lr_scale` on log_alpha asks the trainer for a larger rate."""

    def __init__(self, n: int, keep: float = 0.95, beta: float = 2 / 3, limits: tuple[float, float] = (-0.1, 1.1),
                 lr_scale: Positive = 1.0):
        super().__init__()
        self.log_alpha = nn.Parameter(torch.full((n,), math.log(keep / (1 - keep))))
        self.log_alpha.lr_scale = lr_scale
        self.beta, (self.l, self.r) = beta, limits

    def prob_nonzero(self) -> torch.Tensor:
        """P(z > 0) of each gate: the expected L0 norm, term by term."""
        return torch.sigmoid(self.log_alpha - self.beta * math.log(-self.l / self.r))

    def deterministic(self) -> torch.Tensor:
        return (torch.sigmoid(self.log_alpha) * (self.r - self.l) + self.l).clamp(0, 1)

    def forward(self) -> torch.Tensor:
        if not self.training:
            return self.deterministic()
        u = torch.rand_like(self.log_alpha).clamp(1e-6, 1 - 1e-6)
        s = torch.sigmoid((u.log() - (1 - u).log() + self.log_alpha) / self.beta)
        return (s * (self.r - self.l) + self.l).clamp(0, 1)


class _Reverse(torch.autograd.Function):
    """Identity forward, negated gradient: AdamW's descent on λ is the Lagrangian's ascent."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -grad


def lagrangian(lam: torch.Tensor, gap: torch.Tensor) -> torch.Tensor:
    """λ₁·gap + λ₂·gap² with λ = (λ₁, λ₂) maximised (gradient reversal) while the rest is minimised:
    the sparsity constraint of FLOP and CoFi (gap = expected sparsity − target)."""
    lam = _Reverse.apply(lam)
    return lam[0] * gap + lam[1] * gap * gap
