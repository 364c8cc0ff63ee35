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


def dampened_inverse_cholesky(H: torch.Tensor, percdamp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + λI)⁻¹, λ = percdamp · mean(diag H)."""
    H = H.clone()
    damp = percdamp * torch.mean(torch.diag(H))
    idx = torch.arange(H.shape[0], device=H.device)
    H[idx, idx] += damp
    L = torch.linalg.cholesky(H)
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
