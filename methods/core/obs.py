"""The OBS column sweep that GPTQ and SparseGPT share (Frantar et al.): W's columns are fixed
left to right, and each one's error, divided by its diagonal entry of the Cholesky factor of
H⁻¹, is spread over the columns not yet fixed. The lazy batch updates of the reference code:
within a block of `blocksize` columns the update runs column by column, and the block's
accumulated error reaches the later columns once, at the block's end."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class Block:
    """The block being swept: its columns [i1, i2) of W, their up-to-date copy `W1` and the
    block of the H⁻¹ factor `Hinv1`."""

    i1: int
    i2: int
    W1: torch.Tensor
    Hinv1: torch.Tensor


def obs_sweep(W: torch.Tensor, Hinv: torch.Tensor, blocksize: int, fix: Callable[[Block, int], torch.Tensor],
              start: Callable[[Block], None] | None = None) -> None:
    """Sweep W (out, in) in place: `fix(block, i)` gives the fixed value of the block's column i
    (a quantized or pruned copy of `block.W1[:, i]`); `start(block)` runs before a block's first
    column (SparseGPT's mask selection over the block)."""
    cols = W.shape[1]
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        block = Block(i1, i2, W[:, i1:i2].clone(), Hinv[i1:i2, i1:i2])
        W1, Hinv1 = block.W1, block.Hinv1
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        if start is not None:
            start(block)
        for i in range(i2 - i1):
            w = W1[:, i]
            q = fix(block, i)
            Q1[:, i] = q
            err = (w - q) / Hinv1[i, i]
            W1[:, i:] -= err.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err
        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
