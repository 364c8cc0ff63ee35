"""Quantizers and quantization methods against direct computations."""
from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from conftest import correlated_inputs, real_layer_inputs
from methods.core.arch import fold_scale, scale_pairs, weight_matrix
from methods.quantization.awq import rtn, search_scale
from methods.core.base import build
from methods.quantization.gptq import gptq_quantize
from methods.quantization.nf4 import NF4_LEVELS, nf4_quantize
from methods.quantization.quantizer import QuantSpec, find_params, pack, quantize_weight, unpack
from methods.quantization.smoothquant import smoothing_scales
from methods.quantization.squeezellm import weighted_kmeans_rows
from methods.core.stats import HESSIAN, LinearStats


def _direct_rtn(W: torch.Tensor, bits: int, sym: bool, granularity: str, g: int) -> torch.Tensor:
    """Element-by-element round-to-nearest, written out from the GPTQ quantizer's definition
    (every step in float32 scalars, as the vectorised code computes)."""
    f = lambda v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
    maxq = 2 ** bits - 1
    out = torch.empty_like(W)
    rows, cols = W.shape

    def params(vals):
        lo, hi = torch.minimum(vals.min(), f(0.0)), torch.maximum(vals.max(), f(0.0))
        if sym:
            hi = torch.maximum(lo.abs(), hi)
            lo = -hi if lo < 0 else lo
        if lo == 0 and hi == 0:
            lo, hi = f(-1.0), f(1.0)
        scale = (hi - lo) / maxq
        zero = f((maxq + 1) / 2) if sym else torch.round(-lo / scale)
        return scale, zero

    def q(v, scale, zero):
        code = min(max(float(torch.round(v / scale) + zero), 0.0), float(maxq))
        return scale * (code - zero)

    if granularity == "tensor":
        s, z = params(W.flatten())
    for r in range(rows):
        for c0 in range(0, cols, g if granularity == "group" else cols):
            c1 = min(c0 + g, cols) if granularity == "group" else cols
            if granularity != "tensor":
                s, z = params(W[r, c0:c1])
            for c in range(c0, c1):
                out[r, c] = q(W[r, c], s, z)
    return out


@pytest.mark.parametrize("bits,sym,granularity", list(itertools.product([3, 4, 8], [False, True],
                                                                          ["tensor", "channel", "group"])))
def test_rtn_equals_direct_quantize_dequantize(bits, sym, granularity):
    torch.manual_seed(bits)
    W = torch.randn(6, 40, dtype=torch.float64).float()
    spec = QuantSpec(bits=bits, sym=sym, granularity=granularity, group_size=16)  # 40 = 16 + 16 + 8
    qt = quantize_weight(W, spec)
    torch.testing.assert_close(qt.dequantize(), _direct_rtn(W, bits, sym, granularity, 16), rtol=0, atol=1e-5)
    assert qt.codes.min() >= 0 and qt.codes.max() <= 2 ** bits - 1


@pytest.mark.parametrize("bits", range(2, 9))
def test_packed_codes_round_trip(bits):
    codes = torch.randint(0, 2 ** bits, (7, 45), dtype=torch.uint8)
    words = pack(codes, bits)
    assert words.dtype == torch.int32 and words.numel() == -(-codes.numel() // (32 // bits))
    assert torch.equal(unpack(words, bits, codes.shape), codes)
    with pytest.raises(ValueError):
        pack(torch.tensor([2 ** bits]), bits)


def test_mse_clipping_never_worse_than_minmax():
    W = torch.randn(32, 128)
    W[0, 0] = 12.0  # an outlier stretches the min-max range
    mm = quantize_weight(W, QuantSpec(bits=3)).dequantize()
    mse = quantize_weight(W, QuantSpec(bits=3, clip="mse")).dequantize()
    per_row = lambda Q: (Q - W).abs().pow(2.4).sum(1)  # noqa: E731
    assert torch.all(per_row(mse) <= per_row(mm) + 1e-4)
    assert per_row(mse)[0] < per_row(mm)[0]


def _err(W, Q, x):
    return float(((x @ W.t() - x @ Q.t()) ** 2).sum())


@pytest.mark.parametrize("bits", [3, 4])
@pytest.mark.parametrize("group_size", [-1, 64])
def test_gptq_beats_rtn_on_random_layer(bits, group_size):
    x = correlated_inputs(2048, 256, seed=3)
    W = torch.randn(64, 256)
    spec = QuantSpec.from_knobs(bits, False, group_size)
    H = 2 / 8 * x.t() @ x
    assert _err(W, gptq_quantize(W, H, spec).weight, x) < 0.6 * _err(W, rtn(W, spec), x)


@pytest.mark.parametrize("bits", [3, 4])
def test_gptq_beats_rtn_on_real_layers(tiny, data_root, bits):
    for name, (W, x) in real_layer_inputs(tiny, 1, ["self_attn.v_proj", "mlp.down_proj"]).items():
        spec = QuantSpec.from_knobs(bits, False, -1)
        st = LinearStats(x.shape[1], frozenset({HESSIAN}), x.device)
        st.add_batch(x.view(16, -1, x.shape[1]))
        assert _err(W, gptq_quantize(W, st.hessian, spec).weight, x) < _err(W, rtn(W, spec), x), name


def test_act_order_with_static_groups_keeps_each_group_on_its_own_grid():
    x = correlated_inputs(1024, 128, seed=5)
    W = torch.randn(16, 128)
    spec = QuantSpec.from_knobs(3, False, 32)
    Q = gptq_quantize(W, 2 / 4 * x.t() @ x, spec, act_order=True, static_groups=True).weight
    for g0 in range(0, 128, 32):
        s, z = find_params(W[:, g0:g0 + 32], spec)  # fitted once, on the original weights
        grid = s * (torch.arange(spec.maxq + 1).float().unsqueeze(0) - z)      # (rows, 8)
        dist = (Q[:, g0:g0 + 32].unsqueeze(-1) - grid.unsqueeze(1)).abs().amin(-1)
        assert float(dist.max()) < 1e-5, f"group at {g0} left its grid"
    # dynamic groups under act_order are fitted in permuted order: the original groups break up
    Qd = gptq_quantize(W, 2 / 4 * x.t() @ x, spec, act_order=True, static_groups=False).weight
    s, z = find_params(W[:, :32], spec)
    grid = s * (torch.arange(spec.maxq + 1).float().unsqueeze(0) - z)
    assert float((Qd[:, :32].unsqueeze(-1) - grid.unsqueeze(1)).abs().amin(-1).max()) > 1e-3


def test_gptq_keeps_pruned_weights_zero():
    x = correlated_inputs(1024, 64)
    W = torch.randn(8, 64)
    W[:, ::2] = 0
    Q = gptq_quantize(W, 2 / 4 * x.t() @ x, QuantSpec(bits=4)).weight
    assert torch.all(Q[:, ::2] == 0)


def test_awq_scales_never_worse_than_alpha_zero():
    """Norm -> linear pair with outlier input channels: folded AWQ scales + RTN vs plain RTN."""
    torch.manual_seed(0)
    block = nn.Module()
    block.norm = nn.LayerNorm(64)
    block.fc = nn.Linear(64, 32, bias=False)
    with torch.no_grad():
        block.norm.weight.copy_(1 + torch.rand(64) * torch.tensor([8.0] * 4 + [0.0] * 60))
    h = torch.randn(512, 64)
    spec = QuantSpec.from_knobs(3, False, 32)
    ref = block.fc(block.norm(h)).detach()
    x = block.norm(h).detach()
    s, losses = search_scale(x, [block.fc.weight.data], spec)
    assert losses[0] == pytest.approx(float((x @ rtn(block.fc.weight.data, spec).t() - ref).pow(2).mean()))
    plain = float((x @ rtn(block.fc.weight.data, spec).t() - ref).pow(2).mean())
    fold_scale(block, "norm", ("fc",), s)
    with torch.no_grad():
        block.fc.weight.copy_(rtn(block.fc.weight.data, spec))
        awq = float((block.fc(block.norm(h)) - ref).pow(2).mean())
    assert awq <= plain * (1 + 1e-5)
    assert awq < plain  # the outlier channels make a non-trivial scale pay off


def test_smoothing_is_an_exact_identity_in_full_precision(tiny, data_root):
    ids = torch.randint(0, 4096, (2, 64))
    with torch.no_grad():
        before = tiny.model(input_ids=ids).logits.clone()
        saved = {k: v.clone() for k, v in tiny.model.state_dict().items()}
        try:
            for block in tiny.family.blocks(tiny.model):
                linears = tiny.family.linears(block)
                for prev, group in scale_pairs(tiny.family, block):  # norms (SmoothQuant) + linear pairs (AWQ)
                    act = torch.rand(weight_matrix(linears[group[0]]).shape[1]) * 10 + 0.1
                    s = smoothing_scales(act, [weight_matrix(linears[n]) for n in group], 0.5)
                    fold_scale(block, prev, group, s)
            after = tiny.model(input_ids=ids).logits
            assert not torch.equal(saved["model.layers.0.input_layernorm.weight"],
                                   tiny.model.model.layers[0].input_layernorm.weight)
            torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
        finally:
            tiny.model.load_state_dict(saved)


def test_nf4_levels_blocks_and_double_quant():
    W = torch.randn(8, 128)
    deq, codes = nf4_quantize(W, double_quant=False)
    blocks = W.flatten().view(-1, 64)
    absmax = blocks.abs().amax(1, keepdim=True)
    expected = NF4_LEVELS[(blocks / absmax).unsqueeze(-1).sub(NF4_LEVELS).abs().argmin(-1)] * absmax
    torch.testing.assert_close(deq.flatten(), expected.flatten())
    assert codes.max() <= 15 and len(NF4_LEVELS) == 16 and float(NF4_LEVELS[7]) == 0.0
    dq, _ = nf4_quantize(W, double_quant=True)
    assert 0 < float((dq - deq).abs().max()) < 0.02 * float(W.abs().max())


def test_weighted_kmeans_matches_lloyd_fixed_point():
    torch.manual_seed(0)
    W = torch.randn(4, 200)
    a = torch.rand(4, 200)
    c, assign = weighted_kmeans_rows(W, a, 8, iters=100)
    for r in range(4):
        d = (W[r].unsqueeze(1) - c[r].unsqueeze(0)).abs()
        assert torch.equal(assign[r], d.argmin(1))                       # nearest centroid
        for k in range(8):
            m = assign[r] == k
            if m.any():
                torch.testing.assert_close(c[r, k], (a[r, m] * W[r, m]).sum() / a[r, m].sum())  # weighted mean


def test_rates_count_scales_and_double_quantized_constants():
    for name, knobs, expected_bits in [
        ("rtn", {"wbits": 4}, 4 + 32 / 256),
        ("rtn", {"wbits": 4, "group_size": 128}, 4 + 32 / 128),
        ("nf4", {}, 4 + 8 / 64 + 32 / (64 * 256) + 32 / (64 * 256)),
    ]:
        m = build(name, **knobs)
        with torch.no_grad():
            m.compress(0, "l", nn.Linear(256, 64, bias=False), None)
        assert m.summary()["bits_per_weight"] == pytest.approx(expected_bits, rel=1e-3), name


def test_nominal_base_sets_the_tables_rate_and_keeps_the_full_overhead_one():
    from methods.core.model_facts import ModelSize
    size = ModelSize(params=256 * 64, embedding_params=0, linear_weights=256 * 64, linear_zeros=0, per_block_sparsity=(0.0,))
    for knobs, rate in [({"wbits": 3, "nominal_base": 16}, 1 - 3 / 16), ({"wbits": 4, "nominal_base": 32}, 1 - 4 / 32),
                        ({"wbits": 3}, 1 - (3 + 32 / 256) / 16)]:
        m = build("rtn", **knobs)
        with torch.no_grad():
            m.compress(0, "l", nn.Linear(256, 64, bias=False), None)
        rates = m.result(size, size).rates(16)
        assert rates["comp_rate"] == pytest.approx(rate)
        if "nominal_base" in knobs:   # the paper's count, the ledger's kept beside it
            assert rates["overhead_comp_rate"] == pytest.approx(1 - (knobs["wbits"] + 32 / 256) / 16)
        else:
            assert "overhead_comp_rate" not in rates
    with pytest.raises(ValueError, match="nominal_base"):
        build("rtn", wbits=4, nominal_base=12)
