"""SparseGPT (Frantar & Alistarh, 2023): one-shot pruning with OBS weight reconstruction.

Algorithm (paper, Alg. 1 / reference `fasterprune`):
  H = 2/N Σ x xᵀ + λI,  λ = percdamp · mean(diag H)      (dead inputs: H_jj = 1, W_:j = 0)
  Hinv = upper Cholesky factor of H⁻¹
  for each block of B = blocksize columns:
      unstructured: mask the block's s-fraction of lowest w² / [Hinv]_jj²   (adaptive mask selection)
      for each column j in the block:
          N:M: at every M-th column, mask the n lowest w² / [Hinv]_jj² of the next M columns
          q = w_j with masked entries zeroed;  err = (w_j - q) / [Hinv]_jj
          W[:, j:block_end] -= err · Hinv[j, j:block_end]      (OBS update inside the block)
      W[:, block_end:] -= Err · Hinv[block, block_end:]          (lazy batch update)
The reference's `<=` threshold prunes one extra weight per block on ties; here each block
prunes exactly int(rows · B · s) weights, so the layer lands on the target sparsity.
"""
from __future__ import annotations

import torch
from torch import nn

from methods.core.arch import weight_matrix
from methods.core.base import TableRow, register
from methods.core.hessian import dampened_inverse_cholesky, drop_dead_inputs
from methods.core.obs import Block, obs_sweep
from methods.pruning.masks import Sparsity
from methods.pruning.unstructured import PruningMethod
from methods.core.stats import HESSIAN, LinearStats
from methods.core.settings import Count, Damp, Fraction


def sparsegpt_prune(W: torch.Tensor, H: torch.Tensor, target: Sparsity, blocksize: int = 128,
                    percdamp: float = 0.01) -> torch.Tensor:
    """The pruned and reconstructed copy of W (out, in) given the input Hessian H (in, in)."""
    W = W.clone().float()
    Hinv = dampened_inverse_cholesky(drop_dead_inputs(H, W), percdamp)
    n, m = target.n, target.m
    mask1 = torch.zeros(0, dtype=torch.bool)

    def select(block: Block) -> None:       # unstructured: the block's k lowest w²/d² at once
        nonlocal mask1
        mask1 = torch.zeros_like(block.W1, dtype=torch.bool)
        if not target.is_nm:
            score = (block.W1 ** 2 / torch.diag(block.Hinv1).reshape(1, -1) ** 2).flatten()
            k = int(score.numel() * target.ratio)
            if k:
                mask1.view(-1)[torch.sort(score, stable=True)[1][:k]] = True

    def prune(block: Block, i: int) -> torch.Tensor:
        if target.is_nm and i % m == 0:     # n:m: the n lowest of each m columns, as they are reached
            d = torch.diag(block.Hinv1)
            score = block.W1[:, i:i + m] ** 2 / d[i:i + m].reshape(1, -1) ** 2
            mask1.scatter_(1, i + torch.topk(score, n, dim=1, largest=False)[1], True)
        q = block.W1[:, i].clone()
        q[mask1[:, i]] = 0
        return q

    obs_sweep(W, Hinv, blocksize, prune, start=select)
    return W


@register("sparsegpt")
class SparseGPT(PruningMethod):
    stats = frozenset({HESSIAN})
    rows = {"table3": TableRow("SparseGPT", "40")}

    def __init__(self, sparsity: Fraction | str = 0.5, blocksize: Count = 128, percdamp: Damp = 0.01):
        super().__init__(sparsity)
        if blocksize <= 0 or not 0 <= percdamp:
            raise ValueError("sparsegpt needs blocksize > 0 and percdamp >= 0")
        self.blocksize, self.percdamp = blocksize, percdamp

    def check_model(self, linears, family=None) -> None:
        super().check_model(linears, family)
        if self.target.is_nm and self.blocksize % self.target.m:
            raise ValueError(f"blocksize {self.blocksize} must be a multiple of M={self.target.m}")

    def compress(self, block_index: int, name: str, layer: nn.Module, stats: LinearStats) -> None:
        W = weight_matrix(layer)
        W.copy_(sparsegpt_prune(W, stats.hessian, self.target_for(block_index), self.blocksize,
                                self.percdamp).to(W.dtype))
