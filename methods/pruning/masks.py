"""Sparsity targets and the mask rules shared by the pruning methods (True = prune)."""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Sparsity:
    """A pruning target: unstructured `ratio`, or N zeros in every M consecutive input weights."""

    ratio: float
    n: int = 0
    m: int = 0

    @property
    def is_nm(self) -> bool:
        return self.m > 0

    @property
    def label(self) -> str:
        return f"{self.n}:{self.m}" if self.is_nm else f"{self.ratio:g}"

    @classmethod
    def parse(cls, value: float | str) -> "Sparsity":
        """0.5 -> unstructured 50%; "2:4" -> 2 zeros in every 4 consecutive input weights."""
        if isinstance(value, str) and ":" in value:
            match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", value)
            if not match:
                raise ValueError(f"sparsity '{value}' is not of the form N:M (e.g. 2:4)")
            n, m = int(match[1]), int(match[2])
            if not 0 < n < m:
                raise ValueError(f"N:M sparsity needs 0 < N < M, got {n}:{m}")
            return cls(n / m, n, m)
        try:
            ratio = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"sparsity must be a fraction in [0, 1) or 'N:M', got {value!r}") from None
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"sparsity must lie in [0, 1), got {ratio}")
        return cls(ratio)


def row_mask(score: torch.Tensor, ratio: float) -> torch.Tensor:
    """Prune the int(cols * ratio) lowest scores of every output row (Wanda's comparison group)."""
    k = int(score.shape[1] * ratio)
    mask = torch.zeros_like(score, dtype=torch.bool)
    if k:
        idx = torch.sort(score, dim=-1, stable=True)[1][:, :k]
        mask.scatter_(1, idx, True)
    return mask


def matrix_mask(score: torch.Tensor, ratio: float) -> torch.Tensor:
    """Prune exactly int(numel * ratio) lowest scores of the whole matrix."""
    k = int(score.numel() * ratio)
    mask = torch.zeros(score.numel(), dtype=torch.bool, device=score.device)
    if k:
        mask[torch.sort(score.flatten(), stable=True)[1][:k]] = True
    return mask.view_as(score)


def nm_mask(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Prune the n lowest scores in every group of m consecutive input weights of each row."""
    rows, cols = score.shape
    if cols % m:
        raise ValueError(f"{cols} input features are not divisible by M={m}")
    groups = score.reshape(rows, cols // m, m)
    idx = torch.topk(groups, n, dim=-1, largest=False)[1]
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, idx, True)
    return mask.view(rows, cols)


def mask_for(score: torch.Tensor, target: Sparsity, per_row: bool) -> torch.Tensor:
    if target.is_nm:
        return nm_mask(score, target.n, target.m)
    return row_mask(score, target.ratio) if per_row else matrix_mask(score, target.ratio)
