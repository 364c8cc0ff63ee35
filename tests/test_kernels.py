"""kernels/: every format's matmul against its dequantized fp32 reference on awkward shapes, the
Triton kernel under Triton's CPU interpreter, bit-exact packing, GPTQ's codes, and convert.

Tolerances: fp32 activations 1e-5 relative (the kernels reorder the same fp32 sums); bf16
activations 2e-2 relative (bf16 keeps 8 bits of mantissa in the inputs and, for int4, the scales)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import require_package
from kernels.formats.base import Residual
from kernels.formats.csr import CSR
from kernels.formats.int4 import Int4
from kernels.formats.int8 import Int8
from kernels.formats.packed import Packed
from kernels.formats.semi24 import Semi24, is_24
from kernels.linear import KernelLinear
from methods.quantization.quantizer import QuantizedTensor, QuantSpec, pack, quantize_weight, unpack

FP32_TOL, BF16_TOL = 1e-5, 2e-2


def rel(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((y.float() - ref.float()).norm() / ref.float().norm())


def codes(rows: int, cols: int, bits: int, group: int | None, sym: bool = False, seed: int = 0) -> QuantizedTensor:
    torch.manual_seed(seed)
    spec = QuantSpec(bits=bits, sym=sym, granularity="group" if group else "channel", group_size=group or 128)
    return quantize_weight(torch.randn(rows, cols) * 0.05, spec)


def act_order(qt: QuantizedTensor, seed: int = 1) -> QuantizedTensor:
    """The same codes with GPTQ act-order groups: group k holds the columns at permuted positions
    k·g … (k+1)·g − 1 of a random column order."""
    cols = qt.codes.shape[1]
    perm = torch.randperm(cols, generator=torch.Generator().manual_seed(seed))
    g_idx = torch.empty(cols, dtype=torch.long)
    g_idx[perm] = torch.arange(cols) // qt.group_size
    return QuantizedTensor(qt.codes, qt.scale, qt.zero, qt.group_size, qt.bits, g_idx)


# ---- packing -------------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", range(2, 9))
def test_pack_unpack_round_trips_bit_exactly(bits):
    torch.manual_seed(bits)
    c = torch.randint(0, 2 ** bits, (37, 53), dtype=torch.uint8)   # 1961 codes: no whole number of words
    c.view(-1)[: 2 ** bits] = torch.arange(2 ** bits)               # every code value, the top bit included
    words = pack(c, bits)
    assert words.dtype == torch.int32 and words.numel() == -(-c.numel() // (32 // bits))
    assert torch.equal(unpack(words, bits, tuple(c.shape)), c)


def test_pack_rejects_codes_out_of_range():
    with pytest.raises(ValueError, match="out of range"):
        pack(torch.tensor([0, 8]), 3)


# ---- weight-only quantized formats -----------------------------------------------------------------
@pytest.mark.parametrize("dtype,tol", [(torch.float32, FP32_TOL), (torch.bfloat16, BF16_TOL)])
def test_int8_matches_the_dequantized_codes(dtype, tol):
    qt = codes(37, 45, 8, None, sym=True)      # K = 45: padded to 48 for the CPU kernel
    fmt = Int8(qt, "cpu", dtype)
    x = torch.randn(3, 45)
    assert fmt.k_pad == 3
    assert rel(fmt.matmul(x.to(dtype)), x @ qt.dequantize().t()) < tol
    # the scales, rounded to the activations' dtype
    assert rel(fmt.dequantize(), qt.dequantize()) < (1e-6 if dtype == torch.float32 else 2 ** -8)
    with pytest.raises(ValueError, match="symmetric"):
        Int8(codes(37, 45, 8, None, sym=False), "cpu", dtype)


@pytest.mark.parametrize("mode", ["per_token", "per_tensor"])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, FP32_TOL), (torch.bfloat16, BF16_TOL)])
def test_w8a8_matches_the_fake_quantized_activations_through_the_codes(mode, dtype, tol):
    """The int8 x int8 product, rescaled, equals what the layer's activation quantizer feeds
    the fake-quantized weight; without the activation quantization it would be ~1% off."""
    from kernels.formats.w8a8 import W8A8
    from methods.quantization.act_quant import ActQuantSpec
    qt = codes(37, 45, 8, None, sym=True)
    x = torch.randn(5, 45) * 3
    act = ActQuantSpec(8, mode, float(x.abs().max()) if mode == "per_tensor" else None)
    fmt = W8A8(qt, act, "cpu")
    y = fmt.matmul(x.to(dtype))
    # the codes are computed in the activations' dtype, as the layer's quantizer hook does
    assert y.dtype == dtype and rel(y, act.fake(x.to(dtype)).float() @ qt.dequantize().t()) < tol
    assert rel(fmt.matmul(x), x @ qt.dequantize().t()) > 1e-3          # the activations really are quantized
    with pytest.raises(ValueError, match="symmetric"):
        W8A8(codes(37, 45, 8, None, sym=False), act, "cpu")
    with pytest.raises(ValueError, match="8-bit activations"):
        W8A8(qt, ActQuantSpec(6, "per_token"), "cpu")


@pytest.mark.parametrize("ordered", [False, True])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, FP32_TOL), (torch.bfloat16, BF16_TOL)])
def test_int4_cpu_kernel_matches_the_dequantized_codes(ordered, dtype, tol):
    qt = codes(40, 200, 4, 64)          # N not a multiple of 16, K not a multiple of the group
    if ordered:
        qt = act_order(qt)
    fmt = Int4(qt, "cpu", dtype)
    assert fmt.backend == "torch._weight_int4pack_mm_for_cpu" and fmt.k_pad == 56
    for m in (1, 7):
        x = torch.randn(m, 200)
        assert rel(fmt.matmul(x.to(dtype)), x @ qt.dequantize().t()) < tol
        assert rel(fmt.matmul(x.to(dtype)), x @ fmt.dequantize().t()) < tol
    assert rel(fmt.dequantize(), qt.dequantize()) < (1e-6 if dtype == torch.float32 else 2 ** -8)


def test_int4_rejects_what_tinygemm_cannot_run():
    with pytest.raises(ValueError, match="groups of"):
        Int4(codes(16, 64, 4, 16), "cpu", torch.float32)
    with pytest.raises(ValueError, match="4-bit"):
        Int4(codes(16, 64, 3, 32), "cpu", torch.float32)


@pytest.mark.parametrize("bits,group", [(2, 32), (3, 16), (4, None), (4, 64), (8, 32)])
def test_packed_matches_the_dequantized_codes_in_torch_and_triton(bits, group, monkeypatch):
    qt = act_order(codes(37, 77, bits, group)) if group else codes(37, 77, bits, None)
    x = torch.randn(5, 77)
    ref = x @ qt.dequantize().t()
    torch.testing.assert_close(Packed(qt, "cpu", torch.float32).dequantize(), qt.dequantize())
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    eager = Packed(qt, "cpu", torch.float32)
    assert eager.backend == "torch-dequant"
    assert rel(eager.matmul(x), ref) < FP32_TOL
    require_package("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    kernel = Packed(qt, "cpu", torch.float32)
    assert kernel.backend.startswith("triton")
    for m in (1, 5, 19):                 # one row, and more rows than one 16-row tile
        xm = torch.randn(m, 77)
        assert rel(kernel.matmul(xm), xm @ qt.dequantize().t()) < FP32_TOL
    for dtype in (torch.float16, torch.bfloat16):
        half = Packed(qt, "cpu", dtype)
        assert rel(half.matmul(x.to(dtype)), ref) < BF16_TOL


def test_triton_kernel_reads_the_group_of_every_column():
    """A g_idx that puts column k in group (k mod G) must scale every column by its own group:
    a kernel that assumed runs of group_size columns would be off by whole scales."""
    require_package("triton")
    from kernels.triton_packed import packed_matmul
    qt = codes(20, 48, 4, 16)
    scale = torch.tensor([[1.0, 10.0, 100.0]]).repeat(20, 1)
    mixed = QuantizedTensor(qt.codes, scale, qt.zero, 16, 4, torch.arange(48) % 3)
    x = torch.randn(2, 48)
    y = packed_matmul(x, pack(mixed.codes, 4), mixed.scale, mixed.zero.float(), mixed.g_idx.int(), 4, 20)
    assert rel(y, x @ mixed.dequantize().t()) < FP32_TOL
    assert rel(y, x @ QuantizedTensor(qt.codes, scale, qt.zero, 16, 4).dequantize().t()) > 0.1


# ---- sparse formats ------------------------------------------------------------------------------
def test_csr_matches_the_dense_pruned_weight():
    torch.manual_seed(0)
    w = torch.randn(37, 45)
    w[torch.rand_like(w) < 0.7] = 0
    fmt = CSR(w, "cpu")
    x = torch.randn(6, 45)
    assert fmt.density == pytest.approx(float((w != 0).float().mean()))
    assert rel(fmt.matmul(x), x @ w.t()) < FP32_TOL


def test_2_4_pattern_check_and_cpu_refusal():
    w = torch.randn(8, 16)
    assert not is_24(w)
    g = w.reshape(8, 4, 4)
    keep = torch.zeros_like(g, dtype=torch.bool).scatter_(-1, g.abs().topk(2, -1).indices, True)
    pruned = (g * keep).reshape(8, 16)
    assert is_24(pruned) and not is_24(pruned[:, :14])
    with pytest.raises(ValueError, match="CUDA only"):
        Semi24(pruned, "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="2:4 kernels need CUDA")
def test_2_4_matches_the_dense_pruned_weight_on_cuda():
    torch.manual_seed(0)
    w = torch.randn(128, 256)
    g = w.reshape(128, 64, 4)
    keep = torch.zeros_like(g, dtype=torch.bool).scatter_(-1, g.abs().topk(2, -1).indices, True)
    pruned = (g * keep).reshape(128, 256)
    fmt = Semi24(pruned, "cuda")
    x = torch.randn(32, 256, device="cuda", dtype=torch.bfloat16)
    assert rel(fmt.matmul(x), x.float() @ pruned.cuda().t()) < BF16_TOL


# ---- the module ------------------------------------------------------------------------------------
def test_kernel_linear_adds_the_kept_weights_and_the_bias():
    """OWQ/SpQR keep some weights in fp16: the layer computes codes + sparse residual + bias."""
    qt = codes(24, 64, 4, 32)
    w = qt.dequantize().clone()
    w[:, 5] = torch.randn(24)          # a kept column
    w[3, 40] = 1.5                     # an outlier
    res = Residual.of(w, qt.dequantize())
    assert res.nnz == 24 + 1
    bias = torch.randn(24)
    layer = KernelLinear(Int4(qt, "cpu", torch.float32), bias, res)
    x = torch.randn(2, 3, 64)
    torch.testing.assert_close(layer(x), nn.functional.linear(x, w, bias), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(layer.dequantized_weight(), w)


# ---- GPTQ keeps its codes --------------------------------------------------------------------------
@pytest.mark.parametrize("act_order_,static", [(False, False), (True, False), (True, True)])
def test_gptq_codes_dequantize_to_its_weight(act_order_, static):
    from methods.quantization.gptq import gptq_quantize
    torch.manual_seed(0)
    W = torch.randn(32, 80)
    W[:, 7] = 0                        # pruned weights stay exactly zero, through their code for 0
    X = torch.randn(256, 80) * torch.linspace(0.1, 3, 80)
    H = 2 * X.t() @ X / 256
    spec = QuantSpec(bits=3, granularity="group", group_size=16)
    res = gptq_quantize(W, H, spec, blocksize=32, act_order=act_order_, static_groups=static)
    qt = res.codes
    assert (qt.g_idx is not None) == (act_order_ and not static)
    if qt.g_idx is not None:           # five groups of 16 columns each, in the permuted order
        assert torch.equal(torch.bincount(qt.g_idx), torch.full((5,), 16))
    torch.testing.assert_close(qt.dequantize(), res.weight, rtol=0, atol=0)
    assert int(qt.codes.max()) <= 7 and bool((res.weight[:, 7] == 0).all())


# ---- convert ----------------------------------------------------------------------------------------
def test_the_format_registry_maps_records_to_formats():
    from kernels.formats import NoKernel, format_for
    q = {"kind": "quantized", "wbits": 4, "quant_granularity": "group", "group_size": 128}
    assert format_for({"compression": q}).key == "int4-w4-g128"
    assert format_for({**q, "group_size": 16}).key == "packed-w4-g16"
    assert format_for({**q, "wbits": 3, "quant_granularity": "channel"}).key == "packed-w3-ch"
    assert format_for({**q, "wbits": 8, "quant_granularity": "tensor", "sym": True}).key == "int8"
    assert format_for({**q, "wbits": 8, "quant_granularity": "channel", "sym": False}).key == "packed-w8-ch"
    assert format_for({"kind": "unstructured", "comp_rate": 0.5}).key == "sparse-50"
    assert format_for({"kind": "n:m", "comp_rate": 0.5, "pattern": "2:4"}).key == "2:4"
    assert format_for({"kind": "n:m", "comp_rate": 0.5, "pattern": "4:8"}).key == "sparse-50"
    assert format_for({"kind": "structured", "comp_rate": 0.5}).key == "dense"
    with pytest.raises(NoKernel, match="uniform"):
        format_for({**q, "quant_granularity": "codebook-per-row"})
    w8a8 = {**q, "wbits": 8, "sym": True, "quant_granularity": "channel", "abits": 8}
    assert format_for(w8a8).key == "w8a8"                      # int8 x int8, not a weight-only figure
    with pytest.raises(NoKernel, match="weight-only"):       # W3A8, W6A6: no kernel runs them
        format_for({**w8a8, "wbits": 3})
    with pytest.raises(NoKernel, match="one weight scale per row"):
        format_for({**w8a8, "quant_granularity": "group", "group_size": 64})
    assert format_for({**q, "abits": 16}).key == "int4-w4-g128"
    with pytest.raises(NoKernel, match="'codebook' has no kernel format"):
        format_for({"kind": "codebook"})


def test_every_format_key_parses_back_to_its_format_and_the_benchmark_names_only_known_keys():
    from omegaconf import OmegaConf

    from conftest import ROOT
    from kernels.formats import formats, parse
    keys = ["int8", "w8a8", "int4-w4-g128", "packed-w3-ch", "packed-w2-g64", "sparse-90", "2:4", "2:4-cusparselt",
            "dense", "neurons-50", "lowrank-25"]
    assert {parse(k).name for k in keys} == {n for n, c in formats().items() if c.__module__.startswith("kernels.")}
    assert all(parse(k).key == k for k in keys)
    assert parse("2:4-cusparselt").backend == "cusparselt" and parse("sparse-90").sparsity == 0.9
    bench = OmegaConf.load(ROOT / "conf" / "kernels_bench.yaml")
    for prof in bench.profiles.values():
        for k in [*prof.formats, *prof.e2e_formats]:
            assert parse(k).key == k
    with pytest.raises(ValueError, match="unknown kernel format 'int3'; known: w8a8, int8, int4, packed"):
        parse("int3")


def test_2_4_layers_take_csr_off_cuda_and_where_a_layer_is_not_2_4():
    from kernels.formats import parse
    w = torch.randn(8, 16)
    g = w.reshape(8, 4, 4)
    pruned = (g * torch.zeros_like(g, dtype=torch.bool).scatter_(-1, g.abs().topk(2, -1).indices, True)).reshape(8, 16)
    fmt = parse("2:4")
    assert fmt.on_device(torch.device("cpu"), [pruned]).key == "sparse-50"
    assert fmt.on_device(torch.device("cuda"), [pruned, w]).key == "sparse-50"
    assert fmt.on_device(torch.device("cuda"), [pruned]) is fmt


def test_convert_refuses_a_model_without_codes(tiny):
    from kernels.convert import convert
    import copy
    record = {"compression": {"kind": "quantized", "wbits": 4, "quant_granularity": "group", "group_size": 128}}
    with pytest.raises(ValueError, match="holds no integer codes"):
        convert(copy.deepcopy(tiny.model), record)


@pytest.mark.e2e
def test_convert_gptq_4bit_g128_tiny_llama_scores_like_the_fake_quantized_model(tmp_path):
    """The pipeline's kernel stage: GPTQ W4 g128 on the tiny Llama, the linears swapped for the
    int4 CPU kernel, perplexity on 4 windows within 1e-4 (relative) of the fake-quantized model's.
    Plumbing: 128-token windows, so that the timed prefill (one window, through a kernel made for
    decode) takes a quarter of the model's 512."""
    from conftest import base_config
    from eval.pipeline import run
    rec = run(base_config(tmp_path, method="gptq", **{"method.wbits": 4, "method.group_size": 128,
                                                       "kernels.convert": "true", "eval.max_windows": 4,
                                                       "model.seqlen": 128, "calib.nsamples": 16,
                                                       "timing.repeats": 3}))
    k = rec["kernels"]
    assert k["format"] == "int4-w4-g128" and k["layers"] == 28
    assert k["backends"] == ["torch._weight_int4pack_mm_for_cpu"]
    assert k["max_weight_rel_err"] < 1e-6 and k["residual_nnz"] == 0   # (q − 8)·s + m vs s·(q − z): rounding
    fake, kern = k["score_fake_quant"]["wikitext2"], k["score"]["wikitext2"]
    assert fake == rec["metrics"]["wikitext2"]["ppl"]
    assert abs(kern / fake - 1) < 1e-4, (kern, fake)
    assert k["decode_speedup"] > 0 and k["prefill_speedup"] > 0 and k["dense"]["prefill_tokens"] == 128
    # timed against a dense copy in the same dtype, interleaved, every pass kept with the spread
    s = k["speedup"]
    assert k["dense_dtype"] == k["dtype"] == "float32" and len(k["dense"]["passes"]) == len(s["ratios"]) == 3
    assert s["q1"] <= s["median"] == k["decode_speedup"] <= s["q3"]


# ---- the benchmark and the tables' Speedup cells ----------------------------------------------------
@pytest.mark.e2e
def test_bench_smoke_writes_a_valid_results_file(tmp_path, monkeypatch):
    """The CI-sized profile: every layer case checked against its reference, ceilings measured,
    the end-to-end entries of the tiny Llama written. Run as `make bench-kernels` runs on a CPU:
    without Triton's interpreter (the packed format takes its torch fallback; the Triton kernel
    itself is checked against the dequantized codes above, where the interpreter costs seconds
    per call, not minutes of timing repeats)."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    import json

    from hydra import compose, initialize_config_dir

    import runpy

    from conftest import ROOT
    bench = runpy.run_path(str(ROOT / "scripts" / "bench_kernels.py"), run_name="bench_kernels")["run"]
    out = tmp_path / "kernels.json"
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="kernels_bench", overrides=["profile=smoke", "device=cpu", f"out={out}"])
    bench(cfg)
    rep = json.loads(out.read_text())
    assert rep["device_type"] == "cpu" and rep["torch"] == torch.__version__ and rep["profile"] == "smoke"
    assert rep["ceilings"]["matmul_flops"]["float32"] > 1e9 and rep["ceilings"]["copy_bytes_per_s"] > 1e9
    timed = [e for e in rep["layers"] if e["format"] != "dense"]
    assert {e["format"] for e in timed} == {"int8", "w8a8", "int4-w4-g128", "packed-w3-g128", "sparse-50",
                                            "neurons-50", "lowrank-50"}
    assert all("error" not in e and e["ok"] and e["seconds"] > 0 and e["achieved_fraction"] > 0 for e in timed)
    assert {e["tokens"] for e in rep["layers"]} == {1, 64} and {tuple(e["shape"]) for e in timed} == {
        (256, 256), (688, 256), (256, 688)}
    e2e = {e["format"]: e for e in rep["end_to_end"]}
    assert set(e2e) == {"int8", "int4-w4-g128", "sparse-50"}
    assert all(e["layers"] == 28 and e["decode_speedup"] > 0 and e["logits_rel_err"] < 2e-2 for e in e2e.values())


def test_speedup_cells_are_the_records_own_and_labelled_with_their_device():
    from tables.speedups import speedup_of
    spread = {"median": 1.9, "q1": 1.8, "q3": 2.0, "repeats": 5, "ratios": [1.8, 1.85, 1.9, 1.95, 2.0],
              "metric": "decode tokens/s at batch 1, converted / dense"}
    rec = {"compression": {"kind": "quantized", "wbits": 4, "quant_granularity": "group", "group_size": 128},
           "hardware": {"device": "cpu", "name": "AMD EPYC"},
           "kernels": {"format": "int4-w4-g128", "device": "AMD EPYC", "dtype": "float32", "dense_dtype": "float32",
                       "speedup": spread}}
    s = speedup_of(rec)
    assert s.median == 1.9 and s.device == "AMD EPYC (CPU)" and "int4-w4-g128" in s.basis and "float32" in s.basis
    gpu = {**rec, "hardware": {"device": "cuda:0", "name": "NVIDIA H200"},
           "kernels": {**rec["kernels"], "device": "NVIDIA H200"}}
    assert speedup_of(gpu).device == "NVIDIA H200 (GPU)"
    # a format with no kernel on the device (packed codes dequantized per call) has no cell
    no_kernel = {**rec, "kernels": {"format": "packed-w3-ch", "backends": ["torch-dequant"], "reason": "no kernel"}}
    assert speedup_of(no_kernel) is None
    assert speedup_of({**rec, "kernels": {"format": None, "reason": "no kernel format"}}) is None
    own = {**rec, "speedup": {**spread, "median": 1.234, "q1": 1.2, "q3": 1.3, "device": "AMD EPYC"}}
    assert speedup_of(own).median == 1.234 and "smaller model" in speedup_of(own).basis


@pytest.mark.e2e
def test_convert_smoothquant_w8a8_runs_the_int8_product_and_scores_alike(tmp_path):
    """Plumbing as for GPTQ above: 128-token windows, so that the timed prefill through the CPU's
    int8 product takes a quarter of the model's 512."""
    from conftest import base_config
    from eval.pipeline import run
    rec = run(base_config(tmp_path, method="smoothquant", **{"kernels.convert": "true", "eval.max_windows": 4,
                                                              "model.seqlen": 128, "calib.nsamples": 16,
                                                              "timing.repeats": 3}))
    k = rec["kernels"]
    assert k["format"] == "w8a8" and k["backends"] == ["torch._int_mm (int8 x int8 -> int32)"] and k["layers"] == 28
    fake, kern = k["score_fake_quant"]["wikitext2"], k["score"]["wikitext2"]
    # the exact int32 product against the fake-quantized fp32 one: activation codes at a rounding
    # boundary flip by one between the two paths, and which ones flip depends on the CPU's kernels.
    # Measured over these 4 windows of 128 tokens (1 and 2 threads alike): -2.9e-4 with AVX-512,
    # 4.6e-5 with AVX2, 1.1e-4 without SIMD (ATEN_CPU_CAPABILITY=avx512|avx2|default), and -4.7e-4
    # on a CI machine. A wrong scale, zero point or transpose moves it by more than 1e-2.
    assert abs(kern / fake - 1) < 1e-3, (kern, fake)


def test_the_summary_holds_a_gpu_file_to_its_targets():
    """kernels/summary.py: the geometric mean over the target's shapes, the best of its formats, the
    kernel that ran named; every format held to the 2048-token floor."""
    from kernels.summary import per_layer_targets
    targets = {"shapes": ["llama-7b"], "per_layer": [
        {"what": "4-bit", "formats": ["int4-w4-g128", "packed-w4-g128"], "tokens": 1, "at_least": 2.5, "best": True},
        {"what": "floor", "formats": "all", "tokens": 2048, "at_least": 0.9, "each": True}]}

    def entry(fmt, m, speedup, backend="k", shape_set="llama-7b"):
        return {"set": shape_set, "format": fmt, "tokens": m, "speedup": speedup, "achieved_fraction": 0.5,
                "backend": backend}
    layers = [entry("int4-w4-g128", 1, 2.0, "tinygemm"), entry("int4-w4-g128", 1, 4.5, "gemlite"),
              entry("packed-w4-g128", 1, 1.0), entry("int4-w4-g128", 1, 99.0, shape_set="llama-70b"),
              entry("int4-w4-g128", 2048, 0.95), entry("packed-w4-g128", 2048, 0.5)]
    four, floor = per_layer_targets({"layers": layers}, targets)
    assert four["format"] == "int4-w4-g128" and four["figures"]["int4-w4-g128"]["speedup"] == pytest.approx(3.0)
    assert four["met"] and four["figures"]["int4-w4-g128"]["kernels"] == ["gemlite", "tinygemm"]
    assert not floor["met"] and list(floor["below"]) == ["packed-w4-g128"]
    layers[1]["speedup"] = 2.0                                   # geometric mean 2.0: below 2.5
    assert not per_layer_targets({"layers": layers}, targets)[0]["met"]
    assert not per_layer_targets({"layers": []}, targets)[0]["met"]   # no figure is no claim
