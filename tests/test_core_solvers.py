"""The shared numerical pieces of methods/core: the OBS column sweep (GPTQ, SparseGPT), the
relative dampening of their solves, and the one-dimensional searches to a target."""
from __future__ import annotations

import pytest
import torch

from methods.core.hessian import dampen
from methods.core.obs import obs_sweep
from methods.core.search import bisect, smallest_meeting


def _problem(rows: int = 8, cols: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(4 * cols, cols, generator=g, dtype=torch.float64)
    H = dampen(X.t() @ X, 0.01)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    return torch.randn(rows, cols, generator=g, dtype=torch.float64), Hinv


def _round(block, i):
    return block.W1[:, i].round()


def test_the_lazy_batch_updates_equal_the_column_by_column_sweep():
    W, Hinv = _problem()
    per_column, blocked = W.clone(), W.clone()
    obs_sweep(per_column, Hinv, 1, _round)
    obs_sweep(blocked, Hinv, 7, _round)            # blocks that do not divide the columns
    assert torch.allclose(per_column, blocked, rtol=0, atol=1e-9)
    assert torch.equal(blocked, blocked.round())   # every column fixed to what `fix` gave


def test_the_sweep_moves_the_error_onto_later_columns_and_lowers_the_output_error():
    W, Hinv = _problem()
    H = torch.cholesky_inverse(Hinv, upper=True)    # the dampened Hessian again
    swept = W.clone()
    obs_sweep(swept, Hinv, 8, _round)
    naive = W.round()
    loss = lambda Q: torch.trace((Q - W) @ H @ (Q - W).t())   # noqa: E731
    assert loss(swept) < 0.9 * loss(naive)


def test_dampen_adds_a_share_of_each_matrix_mean_diagonal_and_keeps_a_zero_matrix_solvable():
    H = torch.stack([torch.diag(torch.tensor([1.0, 3.0])), torch.zeros(2, 2)])
    out = dampen(H, 0.5)
    assert torch.equal(out[0], torch.diag(torch.tensor([2.0, 4.0])))
    assert torch.all(torch.diagonal(out[1]) > 0) and torch.equal(H[1], torch.zeros(2, 2))   # a copy


@pytest.mark.parametrize("threshold", [0.0, 0.3, 1.0, 5.7, 300.0])
def test_smallest_meeting_finds_the_threshold_from_above(threshold):
    calls = []

    def meets(x: float) -> bool:
        calls.append(x)
        return x >= threshold
    found = smallest_meeting(meets, iters=30, cap=1e3)
    assert meets(found) and found - threshold < 1e-6 * max(threshold, 1)


def test_smallest_meeting_stops_growing_at_its_cap():
    assert smallest_meeting(lambda x: False, iters=5, cap=8.0) == 8.0


def test_bisect_keeps_the_condition_at_its_upper_end():
    lo, hi = bisect(lambda x: x * x >= 2, 0.0, 2.0, 40)
    assert lo * lo < 2 <= hi * hi and hi - lo < 1e-11
