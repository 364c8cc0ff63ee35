"""The input Hessian H = 2/N Σ x xᵀ as the OBS solvers (GPTQ, SparseGPT) prepare it, and the
setting under which many small inverses run (oBERT's Fisher blocks, ZipLM's groups)."""
from __future__ import annotations

from contextlib import contextmanager

import torch


def drop_dead_inputs(H: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """A float copy of H with H_jj = 1 for inputs that never fired; zeroes those columns of W
    (in place), as the reference code does."""
    H = H.float().clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    return H


def dampen(H: torch.Tensor, rel: float) -> torch.Tensor:
    """A copy of H (or of each matrix of a batch) with λ = rel · mean(diag H) added to its
    diagonal: the relative dampening of the OBS solvers (GPTQ's `percdamp`), ZipLM's and
    Kprune's solves and Mr.BiQ's refits. The mean is floored at 1e-12, so that a matrix of
    inputs that never fired stays solvable, and summed over a contiguous copy of the diagonal,
    as GPTQ's `torch.mean(torch.diag(H))` does (a sum over the strided view can differ in the
    last bit)."""
    H = H.clone()
    diagonal = H.diagonal(dim1=-2, dim2=-1)
    mean = torch.mean(diagonal.contiguous(), dim=-1, keepdim=True).clamp_min(1e-12)
    diagonal.add_(rel * mean)
    return H


def dampened_inverse_cholesky(H: torch.Tensor, percdamp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + λI)⁻¹, λ = percdamp · mean(diag H)."""
    L = torch.linalg.cholesky(dampen(H, percdamp))
    return torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)


@contextmanager
def one_thread(device: torch.device):
    """Batched small LAPACK calls on a CPU: one thread (the threaded path stalls on many small
    matrices, by orders of magnitude on a busy machine)."""
    if device.type != "cpu":
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)
