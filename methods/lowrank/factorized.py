"""Truncated (and Fisher-weighted) SVD of a weight matrix, stored as two linears.

    W (out x in) ≈ B A,   A = Σ_k^½ V_kᵀ (k x in),  B = U_k Σ_k^½ (out x k)

so `FactorizedLinear` is physically smaller when k·(out + in) < out·in. With row weights
d (FWSVD: d_i = √(Σ_j Fisher_ij)), the SVD is of diag(d)·W and B is divided back by d."""
from __future__ import annotations

import math

import torch
from torch import nn


def rank_for_rate(out_features: int, in_features: int, rate: float) -> int:
    """The largest rank whose two factors hold at most (1 − rate) of the matrix's parameters."""
    k = math.floor((1 - rate) * out_features * in_features / (out_features + in_features))
    if k < 1:
        raise ValueError(f"rate {rate} leaves no rank for a {out_features}x{in_features} matrix")
    return k


def svd_factors(weight: torch.Tensor, rank: int, row_weights: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) with B @ A the best rank-`rank` approximation of W in the (row-weighted) Frobenius
    norm: ‖diag(d)(W − BA)‖_F minimal (Eckart–Young); d = 1 gives plain truncated SVD."""
    w = weight.double()
    d = None if row_weights is None else row_weights.double().clamp_min(1e-12)
    target = w if d is None else d[:, None] * w
    u, s, vh = torch.linalg.svd(target, full_matrices=False)
    root = s[:rank].sqrt()
    a = root[:, None] * vh[:rank]
    b = u[:, :rank] * root[None, :]
    if d is not None:
        b = b / d[:, None]
    return a.to(weight.dtype), b.to(weight.dtype)


class FactorizedLinear(nn.Module):
    """y = B(A x) + bias: a rank-k replacement for an nn.Linear."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        rank, in_features = a.shape
        out_features = b.shape[0]
        self.first = nn.Linear(in_features, rank, bias=False, dtype=a.dtype, device=a.device)
        self.second = nn.Linear(rank, out_features, bias=bias is not None, dtype=a.dtype, device=a.device)
        with torch.no_grad():
            self.first.weight.copy_(a)
            self.second.weight.copy_(b)
            if bias is not None:
                self.second.bias.copy_(bias)
        self.in_features, self.out_features, self.rank = in_features, out_features, rank

    @property
    def weight(self) -> torch.Tensor:
        """The (out, in) product, for code that reads a linear's weight (size facts, tests)."""
        return self.second.weight @ self.first.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.second.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))


def factorize(layer: nn.Linear, rank: int, row_weights: torch.Tensor | None = None) -> FactorizedLinear:
    a, b = svd_factors(layer.weight.data, rank, row_weights)
    return FactorizedLinear(a, b, None if layer.bias is None else layer.bias.data)
