"""kernels/routing.py: a layer's codes under several kernels, each call sent to the one that was
fastest at its size; the benchmark and convert name the kernel that ran."""
from __future__ import annotations

import pytest
import torch

from kernels.formats.int4 import Int4
from kernels.routing import DEQUANT_DENSE, Routed, routes_of, weight_only_layouts
from methods.quantization.quantizer import QuantSpec, quantize_weight


def _codes(rows=40, cols=256, bits=4, group=64, seed=0):
    torch.manual_seed(seed)
    return quantize_weight(torch.randn(rows, cols) * 0.05,
                           QuantSpec(bits=bits, sym=False, granularity="group", group_size=group))


def _rel(y, ref):
    return float((y.float() - ref.float()).norm() / ref.float().norm())


@pytest.fixture(autouse=True)
def _fresh_choices(monkeypatch):
    import kernels.routing as routing
    monkeypatch.setattr(routing, "_CHOICES", {})


def test_each_call_runs_the_winner_of_the_smallest_bucket_at_or_above_its_size(monkeypatch):
    import kernels.routing as routing
    qt = _codes()
    ran = []
    winners = {1: "torch._weight_int4pack_mm_for_cpu", 16: "torch._weight_int4pack_mm_for_cpu", 64: DEQUANT_DENSE}
    monkeypatch.setattr(routing, "fastest", lambda fns, x, t: (winners[x.shape[0]], {k: 0.0 for k in fns}))
    layout = Int4(qt, "cpu", torch.float32)
    r = Routed([layout], torch.float32, tokens=(16, 1, 64))
    assert r.buckets == [1, 16, 64] and r.choice == winners
    assert r.backend == "1 tokens: torch._weight_int4pack_mm_for_cpu; 16 tokens: torch._weight_int4pack_mm_for_cpu; " \
                        f"64 tokens: {DEQUANT_DENSE}"
    for name in list(r.routes):
        fn = r.routes[name]
        r.routes[name] = lambda x, fn=fn, name=name: ran.append(name) or fn(x)
    for m in (1, 2, 16, 17, 64, 500):          # 500: past the largest bucket, its winner
        x = torch.randn(m, 256)
        assert _rel(r.matmul(x), x @ qt.dequantize().t()) < 1e-5
    assert ran == [winners[1], winners[16], winners[16], DEQUANT_DENSE, DEQUANT_DENSE, DEQUANT_DENSE]


def test_a_route_that_wins_no_bucket_is_dropped_with_its_layout(monkeypatch):
    import kernels.routing as routing
    monkeypatch.setattr(routing, "fastest", lambda fns, x, t: (DEQUANT_DENSE, {k: 0.0 for k in fns}))
    r = Routed([Int4(_codes(), "cpu", torch.float32)], torch.float32, tokens=(1, 8))
    assert list(r.routes) == [DEQUANT_DENSE] and len(r.layouts) == 1


def test_routing_times_every_candidate_once_per_shape_and_keeps_the_fastest(monkeypatch):
    import kernels.routing as routing
    timed = []
    real = routing.fastest
    monkeypatch.setattr(routing, "fastest", lambda fns, x, t: timed.append(x.shape) or real(fns, x, t))
    r = Routed([Int4(_codes(), "cpu", torch.bfloat16)], torch.bfloat16, tokens=(1, 32), min_run_time=0.001)
    for m, times in r.seconds.items():
        assert set(times) == {"torch._weight_int4pack_mm_for_cpu", DEQUANT_DENSE}
        assert r.choice[m] == min(times, key=times.get)
    again = Routed([Int4(_codes(seed=1), "cpu", torch.bfloat16)], torch.bfloat16, tokens=(1, 32))  # same shape
    other = Routed([Int4(_codes(rows=48), "cpu", torch.bfloat16)], torch.bfloat16, tokens=(1, 32))
    assert again.choice == r.choice and timed == [(1, 256), (32, 256), (1, 256), (32, 256)]
    assert other.seconds.keys() == {1, 32}


def test_every_weight_only_kernel_of_the_codes_computes_their_product():
    """The candidates for 4-bit g64 codes on the CPU: tinygemm's CPU kernel (the packed format has
    no kernel here, so it is no candidate), and the dequantize-then-dense route."""
    qt = _codes()
    layouts = weight_only_layouts(qt, torch.device("cpu"), torch.float32)
    routes = routes_of(layouts)
    assert set(routes) == {"torch._weight_int4pack_mm_for_cpu", DEQUANT_DENSE}
    x = torch.randn(5, 256)
    for _, fn in routes.values():
        assert _rel(fn(x), x @ qt.dequantize().t()) < 1e-5
    assert weight_only_layouts(_codes(bits=3, group=32), torch.device("cpu"), torch.float32) == []


def test_a_benchmark_case_offers_every_kernel_of_its_product():
    """Weight-only codes: every weight-only kernel and dequantize-then-dense; W8A8 quantizes its
    activations, so only kernels of that product compete (on the CPU: its own)."""
    from kernels.formats import parse
    W = torch.randn(64, 256) * 0.02
    case = parse("int4-w4-g128").case(W, torch.bfloat16)
    assert set(case.routes) == {"torch._weight_int4pack_mm_for_cpu", DEQUANT_DENSE}
    assert set(parse("w8a8").case(W, torch.bfloat16).routes) == {"torch._int_mm (int8 x int8 -> int32)"}
    assert parse("int4-w4-g128").routed((1, 16)).route_tokens == (1, 16)
    assert parse("int4-w4-g128").routed((1, 16)) == parse("int4-w4-g128")   # the key, not the routing


def test_convert_with_routing_names_each_layers_choices_and_keeps_the_output(tiny):
    import copy

    from kernels.convert import convert
    from kernels.end_to_end import compress_for
    model = copy.deepcopy(tiny.model).float()
    compress_for(model, "int4-w4-g128")
    ids = torch.randint(3, 100, (1, 24))
    fake = model(input_ids=ids).logits
    conv = convert(model, {"compression": {"kind": "quantized", "wbits": 4, "quant_granularity": "group",
                                           "group_size": 128}}, route_tokens=(1, 24))
    assert all(b.startswith("1 tokens: ") and "; 24 tokens: " in b for b in conv.layers.values())
    assert _rel(model(input_ids=ids).logits, fake) < 1e-4


# ---- GemLite's inputs: the method's codes as they are ------------------------------------------------
def _gemlite_dequantized(qt):
    from kernels.formats.gemlite import gemlite_inputs
    codes, scale, zero, perm, bits, group = gemlite_inputs(qt)
    g = torch.arange(codes.shape[1]) // group
    w = scale[:, g].float() * (codes.float() - zero[:, g].float())   # GemLite's W = s · (q − z)
    if perm is not None:
        w = w[:, torch.argsort(perm)]                               # the input is gathered by perm
    return w, bits, group


@pytest.mark.parametrize("bits,group,ordered", [(4, 128, False), (4, 64, True), (2, 32, True), (8, 128, False),
                                                (3, 128, False), (4, None, False)])
def test_gemlite_takes_the_codes_scales_and_zeros_unchanged(bits, group, ordered):
    from test_kernels import act_order, codes
    qt = codes(48, 256, bits, group)
    if ordered:
        qt = act_order(qt)
    w, kernel_bits, g = _gemlite_dequantized(qt)
    assert torch.equal(w, qt.dequantize())
    assert kernel_bits == (4 if bits == 3 else bits) and (g == group if group else 256 % g == 0)


def test_gemlite_refuses_what_its_kernels_cannot_take_and_is_no_cpu_candidate():
    from kernels.formats.gemlite import GemLite, gemlite_inputs
    from test_kernels import codes
    with pytest.raises(ValueError, match="1/2/4/8-bit"):
        gemlite_inputs(codes(16, 64, 5, 32))
    with pytest.raises(ValueError, match="divisible by 32"):
        gemlite_inputs(codes(16, 48, 4, 16))
    with pytest.raises(ValueError, match="CUDA only"):
        GemLite(codes(16, 64, 4, 32), torch.device("cpu"), torch.bfloat16)


def test_gemlites_a8w8_takes_only_the_product_the_layer_computes():
    from kernels.formats.gemlite import GemLiteA8W8
    from methods.quantization.act_quant import ActQuantSpec
    from test_kernels import codes
    sym8 = codes(16, 64, 8, None, sym=True)
    for qt, act, why in [(codes(16, 64, 8, None), ActQuantSpec(8, "per_token"), "symmetric"),
                         (sym8, ActQuantSpec(8, "per_tensor", 1.0), "per token"),
                         (sym8, ActQuantSpec(6, "per_token"), "per token to 8 bits")]:
        with pytest.raises(ValueError, match=why):
            GemLiteA8W8(qt, act, torch.device("cuda"), torch.bfloat16)
