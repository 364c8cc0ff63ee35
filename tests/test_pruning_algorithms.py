"""Pruning solvers against direct computations."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import correlated_inputs, real_layer_inputs
from methods.core.base import build
from methods.pruning.masks import Sparsity, nm_mask
from methods.pruning.owl import layer_sparsities, outlier_ratio
from methods.core.stats import ACT_SQ, HESSIAN, LinearStats


def _layer(out_f: int, in_f: int, seed: int = 1) -> nn.Linear:
    torch.manual_seed(seed)
    layer = nn.Linear(in_f, out_f, bias=False)
    layer.weight.data = torch.randn(out_f, in_f)
    return layer


def _stats(x: torch.Tensor, kinds, batches: int = 4) -> LinearStats:
    st = LinearStats(x.shape[-1], frozenset(kinds), x.device)
    for chunk in x.chunk(batches):
        st.add_batch(chunk.unsqueeze(0))
    return st


def _prune(name: str, layer: nn.Linear, x: torch.Tensor, sparsity) -> torch.Tensor:
    method = build(name, sparsity=sparsity)
    with torch.no_grad():
        method.compress(0, "l", layer, _stats(x, method.stats) if method.stats else None)
    return layer.weight.data


def test_stats_match_direct_sums():
    x = correlated_inputs(96, 40)
    st = _stats(x, {HESSIAN, ACT_SQ}, batches=4)  # 4 "sequences"
    torch.testing.assert_close(st.hessian, 2 / 4 * x.t() @ x, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(st.act_sq, (x ** 2).sum(0) / 4)


def test_wanda_mask_is_brute_force_per_row_topk():
    x = correlated_inputs(128, 64)
    layer = _layer(16, 64)
    w0 = layer.weight.data.clone()
    pruned = _prune("wanda", layer, x, 0.5)
    norms = x.norm(dim=0)
    for r in range(16):
        scores = [(abs(float(w0[r, j])) * float(norms[j]), j) for j in range(64)]
        drop = {j for _, j in sorted(scores)[:32]}
        got = {j for j in range(64) if pruned[r, j] == 0}
        assert got == drop, f"row {r}"
        keep = [j for j in range(64) if j not in drop]
        assert torch.equal(pruned[r, keep], w0[r, keep])


def test_wanda_nm_is_brute_force_per_group():
    x = correlated_inputs(128, 32)
    layer = _layer(8, 32)
    w0 = layer.weight.data.clone()
    pruned = _prune("wanda", layer, x, "2:4")
    norms = x.norm(dim=0)
    for r in range(8):
        for g in range(0, 32, 4):
            scores = sorted((abs(float(w0[r, j])) * float(norms[j]), j) for j in range(g, g + 4))
            assert {j for j in range(g, g + 4) if pruned[r, j] == 0} == {j for _, j in scores[:2]}


def test_magnitude_prunes_smallest_of_whole_matrix():
    layer = _layer(16, 32)
    w0 = layer.weight.data.clone()
    pruned = _prune("magnitude", layer, torch.empty(0), 0.25)
    k = int(w0.numel() * 0.25)
    thresh = w0.abs().flatten().sort()[0][k - 1]
    assert int((pruned == 0).sum()) == k
    assert torch.equal(pruned == 0, w0.abs() <= thresh)


@pytest.mark.parametrize("sparsity", [0.5, 0.7])
def test_sparsegpt_hits_exact_target(sparsity):
    x = correlated_inputs(512, 256)
    pruned = _prune("sparsegpt", _layer(48, 256), x, sparsity)
    for b in range(0, 256, 128):  # every 128-column block prunes exactly its share
        assert int((pruned[:, b:b + 128] == 0).sum()) == int(48 * 128 * sparsity)


@pytest.mark.parametrize("pattern", ["2:4", "4:8"])
def test_sparsegpt_nm_pattern_is_exact(pattern):
    n, m = map(int, pattern.split(":"))
    x = correlated_inputs(512, 256)
    pruned = _prune("sparsegpt", _layer(32, 256), x, pattern)
    zeros = (pruned.reshape(32, -1, m) == 0).sum(-1)
    assert torch.all(zeros == n)


def _recon_error(w0, w, x):
    return float(((x @ w0.t() - x @ w.t()) ** 2).sum())


@pytest.mark.parametrize("sparsity", [0.5, 0.7, "2:4"])
def test_sparsegpt_reconstructs_better_than_magnitude_and_wanda(sparsity):
    x = correlated_inputs(1024, 256, seed=3)
    w0 = _layer(64, 256).weight.data.clone()
    err = {name: _recon_error(w0, _prune(name, _layer(64, 256), x, sparsity).clone(), x)
           for name in ("magnitude", "wanda", "sparsegpt")}
    assert err["sparsegpt"] < err["wanda"] < err["magnitude"], err


def test_sparsegpt_on_real_layer_beats_wanda_and_magnitude(tiny, data_root):
    """Block-0 linears of the trained model on real calibration inputs."""
    for name, (w0, x) in real_layer_inputs(tiny, 0, ["self_attn.q_proj", "mlp.down_proj"]).items():
        err = {}
        for method in ("magnitude", "wanda", "sparsegpt"):
            layer = nn.Linear(w0.shape[1], w0.shape[0], bias=False)
            layer.weight.data = w0.clone()
            err[method] = _recon_error(w0, _prune(method, layer, x, 0.5), x)
        assert err["sparsegpt"] < err["wanda"] and err["sparsegpt"] < err["magnitude"], (name, err)


def test_sparsity_parsing_rejects_impossible_targets():
    assert Sparsity.parse("2:4") == Sparsity(0.5, 2, 4)
    assert Sparsity.parse(0.7).ratio == 0.7
    for bad in (1.0, -0.1, "4:2", "2:2", "0:4", "half"):
        with pytest.raises(ValueError):
            Sparsity.parse(bad)
    with pytest.raises(ValueError, match="not divisible"):
        nm_mask(torch.rand(2, 6), 2, 4)


def test_owl_allocation_keeps_mean_and_spread():
    ratios = [3.0, 9.0, 5.0, 1.0]
    s = layer_sparsities(ratios, 0.7, 0.08)
    assert sum(s) / 4 == pytest.approx(0.7)
    assert max(s) - min(s) == pytest.approx(0.16)
    assert s.index(min(s)) == 1 and s.index(max(s)) == 3  # most outliers -> least pruning


def test_owl_outlier_ratio_is_direct_count():
    # mean 46/6 = 7.67, so only 40 > 5 x mean: one outlier in six scores
    scores = [torch.tensor([[1.0, 1.0, 1.0, 40.0]]), torch.tensor([[1.0, 2.0]])]
    assert outlier_ratio(scores, 5) == pytest.approx(100 / 6)
    assert outlier_ratio(scores, 6) == 0.0
