"""Quantization-aware training and adaptor quantization: the straight-through quantizers, the
QAT driver on a tiny BERT through the shared trainer, PEQA, NF4 + LoRA, and RPTQ."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from tiny_encoders import batches, tiny_bert


def _trainer(steps: int = 6, lr: float = 1e-2):
    from methods.training.trainer import TrainConfig, Trainer
    return Trainer(TrainConfig(steps=steps, batch_size=4, lr=lr, warmup_ratio=0.0, weight_decay=0.0),
                   torch.device("cpu"), progress=False)


# ---- straight-through quantizers -------------------------------------------------------------
@pytest.mark.parametrize("make,levels", [
    (lambda w: __import__("methods.quantization.trained.fake_quant", fromlist=["x"]).UniformWeight(4, sym=True), 15),
    (lambda w: __import__("methods.quantization.trained.fake_quant", fromlist=["x"]).UniformWeight(
        3, sym=False, per="channel"), 8),
    (lambda w: __import__("methods.quantization.trained.fake_quant", fromlist=["x"]).UniformWeight(
        4, sym=True, per="channel", learn_scale=True, weight=w), 15),
    (lambda w: __import__("methods.quantization.trained.fake_quant", fromlist=["x"]).TernaryWeight(), 3),
    (lambda w: __import__("methods.quantization.trained.fake_quant", fromlist=["x"]).BinaryWeight(), 2),
])
def test_fake_quant_linear_trains_its_latent_weights_and_stays_on_the_grid(make, levels):
    """Gradients reach the latent weights through the rounding, and after every optimizer step the
    weights the forward uses are on the quantizer's grid (integer multiples of the scale, at most
    2^b levels per scale group)."""
    from methods.quantization.trained.fake_quant import ActQuant, FakeQuantLinear, UniformWeight
    torch.manual_seed(0)
    lin = nn.Linear(16, 8)
    fq = FakeQuantLinear(lin, make(lin.weight), ActQuant(8))
    opt = torch.optim.SGD(fq.parameters(), lr=0.05)
    x, target = torch.randn(32, 16), torch.randn(32, 8)
    start = lin.weight.detach().clone()
    for _ in range(5):
        loss = (fq(x) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0
        opt.step()
        with torch.no_grad():
            w = fq.quantized_weight()
        per_row = isinstance(fq.weight_q, UniformWeight) and fq.weight_q.per == "channel"
        groups = w if per_row else w.reshape(1, -1)
        for g in groups:
            values = torch.unique(g)
            assert len(values) <= levels
            step = (values[1:] - values[:-1]).min() if len(values) > 1 else None
            if step is not None and isinstance(fq.weight_q, UniformWeight):
                ratio = (values - values[0]) / step
                assert torch.allclose(ratio, ratio.round(), atol=1e-3)
    assert not torch.equal(lin.weight, start)
    frozen = fq.freeze()
    with torch.no_grad():
        assert torch.equal(frozen.weight, w)
    from methods.quantization.quantizer import kept_codes
    qt = kept_codes(frozen)     # uniform grids keep their integer codes for kernels.convert, exactly
    assert (qt is not None) == isinstance(fq.weight_q, UniformWeight)
    if qt is not None:
        assert torch.equal(qt.dequantize(), w)


def test_ternary_is_twn_and_the_activation_range_is_a_moving_average():
    from methods.quantization.trained.fake_quant import ActQuant, TernaryWeight
    w = torch.tensor([[0.1, -0.9, 0.5, 0.02], [-0.3, 0.05, 0.8, -0.6]])
    delta = 0.7 * w.abs().mean()
    keep = w.abs() > delta
    alpha = w.abs()[keep].mean()
    assert torch.allclose(TernaryWeight()(w), alpha * torch.sign(w) * keep)
    aq = ActQuant(8, momentum=0.9).train()
    aq(torch.tensor([2.0, -1.0]))
    aq(torch.tensor([0.5, -4.0]))
    assert float(aq.absmax) == pytest.approx(0.9 * 2.0 + 0.1 * 4.0)
    aq.eval()
    x = torch.tensor([1.0, -7.0])
    s = float(aq.absmax) / 127
    assert torch.allclose(aq(x), torch.clamp(torch.round(x / s), -128, 127) * s)


def test_ibert_integer_kernels_match_their_functions_within_the_papers_errors():
    """i-GELU within I-BERT's reported L∞ error (1.8e-2), i-softmax within its 8-bit output step plus
    i-exp's error, i-LayerNorm close to LayerNorm, and the integer square root exact."""
    import math

    from methods.quantization.integer_ops import i_gelu, i_layernorm, i_softmax, i_sqrt, to_int
    x = torch.linspace(-6, 6, 2001, dtype=torch.float64)
    q, s = to_int(x, 16)
    g, sg = i_gelu(q, s)
    err = (g * sg - torch.nn.functional.gelu(x)).abs().max()
    assert 5e-3 < err < 1.9e-2                               # an approximation, as accurate as the paper's
    scores = torch.randn(8, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 3
    q, s = to_int(scores, 16)
    keep = torch.ones_like(scores, dtype=torch.bool)
    keep[:, -4:] = False                                     # padded keys get exactly zero
    p, sp = i_softmax(q, s, keep)
    ref = torch.softmax(scores.masked_fill(~keep, -torch.inf), -1)
    assert (p * sp - ref).abs().max() < 0.01 and bool((p[:, -4:] == 0).all())
    assert torch.equal(p, torch.floor(p))                    # integers
    h = torch.randn(4, 64, dtype=torch.float64) * 5 + 2
    q, s = to_int(h, 16)
    y, sy = i_layernorm(q)
    assert (y * sy - torch.nn.functional.layer_norm(h, (64,))).abs().max() < 1e-3
    n = torch.tensor([0, 1, 2, 15, 16, 17, 99, 10 ** 12, 2 ** 40 + 5], dtype=torch.float64)
    assert i_sqrt(n).tolist() == [math.isqrt(int(v)) for v in n.tolist()]


def test_quant_noise_quantizes_a_random_fraction_in_training_and_everything_at_inference():
    from methods.quantization.trained.quant_noise import NoisyWeight
    torch.manual_seed(0)
    w = torch.randn(64, 64, requires_grad=True)
    q = NoisyWeight(8, p=0.3)
    full = q.eval()(w).detach()
    assert torch.equal(full, super(NoisyWeight, q).forward(w).detach())      # inference: all quantized
    out = q.train()(w)
    on_grid = torch.isclose(out, full, atol=0, rtol=0)
    untouched = out == w
    assert 0.25 < on_grid.float().mean() < 0.35                              # ≈ p of the weights quantized
    assert bool((on_grid | untouched).all())
    out.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))                            # straight through


@pytest.mark.parametrize("name,kw,nominal,levels", [("q8bert_qat", {}, 0.75, 255), ("ternarybert", {}, 1 - 2 / 32, 3),
                                                    ("kmeans_ft", {}, 1 - 3 / 32, 8), ("quant_noise", {}, 0.75, 256),
                                                    ("ibert", {}, 0.75, 255)])
def test_qat_methods_train_through_the_trainer_and_freeze_onto_the_grid(name, kw, nominal, levels):
    from methods.core.arch import FAMILIES
    from methods.core.base import TrainingInputs, build
    from methods.core.hooks import attached
    from methods.core.model_facts import measure
    fam = FAMILIES["bert"]
    teacher = tiny_bert(dropout=0.0, qa=True).requires_grad_(False)
    model = tiny_bert(dropout=0.0, qa=True)
    data = batches(3, qa=True)
    method = build(name, **kw)
    before = measure(model, fam)
    out = method.compress_trained(model, fam, TrainingInputs(_trainer(), lambda e: data, teacher),
                                  torch.device("cpu"))
    rec = method.result(before, measure(out, fam)).to_record(32)
    assert rec["kind"] == "quantized" and rec["comp_rate"] == pytest.approx(nominal)
    assert nominal - 0.05 < rec["overhead_comp_rate"] < nominal   # the scales cost a little (32-wide rows here)
    for block in fam.blocks(out):
        for layer in fam.linears(block).values():
            assert type(layer) is nn.Linear and ("act_quant" in attached(layer)) == (method.abits < 16)
            assert all(len(torch.unique(row)) <= levels for row in layer.weight)
    emb = out.get_input_embeddings().weight
    assert all(len(torch.unique(row)) <= levels for row in emb[:5])
    b = {k: v for k, v in data[0].items() if "positions" not in k}
    with torch.no_grad():
        assert torch.isfinite(out(**b).start_logits).all()


def test_q8bert_qat_runs_through_the_w8a8_kernel_and_ibert_simulation_gets_no_kernel():
    """A trained W8A8 model converts to int8 × int8 kernels from the codes its freeze kept, and
    gives the fake-quantized model's outputs; I-BERT's record (integer arithmetic simulated in
    floating point) names no kernel format, with the reason."""
    from kernels.convert import convert
    from kernels.formats import NoKernel, format_for
    from methods.core.arch import FAMILIES
    from methods.core.base import TrainingInputs, build
    from methods.core.model_facts import measure
    fam = FAMILIES["bert"]
    data = batches(3, qa=True)
    recs = {}
    for name in ("q8bert_qat", "ibert"):
        torch.manual_seed(0)
        model, method = tiny_bert(dropout=0.0, qa=True), build(name)
        before = measure(model, fam)
        out = method.compress_trained(model, fam, TrainingInputs(_trainer(steps=2), lambda e: data, None),
                                      torch.device("cpu"))
        recs[name] = (out, method.result(before, measure(out, fam)).to_record(32))
    out, rec = recs["q8bert_qat"]
    assert rec["sym"] is True and rec["quant_granularity"] == "tensor"
    b = {k: v for k, v in data[0].items() if "positions" not in k}
    with torch.no_grad():
        fake = out(**b).start_logits
        conv = convert(out, {"compression": rec}, "cpu")
        assert conv.format.key == "w8a8" and conv.layers and conv.max_weight_rel_err == 0
        assert set(conv.layers.values()) == {"torch._int_mm (int8 x int8 -> int32)"}
        torch.testing.assert_close(out(**b).start_logits, fake, rtol=1e-4, atol=1e-4)
    assert recs["ibert"][1]["quant_granularity"] == "channel"
    with pytest.raises(NoKernel, match="simulated"):
        format_for({"compression": recs["ibert"][1]})


# ---- decoders: PEQA, NF4 + LoRA ----------------------------------------------------------------
def _two_blocks(tiny) -> nn.Module:
    """An fp32 copy of the tiny Llama cut to its first two blocks (every code path, half the work)."""
    import copy
    model = copy.deepcopy(tiny.model).float()
    model.model.layers = model.model.layers[:2]
    model.config.num_hidden_layers = 2
    return model


def _lm_batches(n: int = 2, size: int = 2, length: int = 32, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(0, 4000, (size, length), generator=g)
        out.append({"input_ids": ids, "labels": ids, "use_cache": False})
    return out


def test_a_peqa_step_changes_the_scales_and_nothing_else(tiny):
    import copy

    from methods.core.base import build
    model = copy.deepcopy(tiny.model).float()
    method = build("peqa", wbits=3)
    wrapped = method.wrap(model, tiny.family)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith(".scale") for n in trainable)
    data = _lm_batches()
    _trainer(steps=1, lr=1e-3).fit(model, lambda e: data, lambda s, t, b: s.loss)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {k for k in before if k.endswith(".scale")}
    m = next(iter(wrapped.values()))
    assert m.codes.dtype == torch.uint8 and int(m.codes.max()) <= 7   # 3-bit codes, frozen
    # the deployed weight is exactly s ⊙ (Q − z), per output channel
    lin = m.to_linear()
    torch.testing.assert_close(lin.weight, m.scale * (m.codes.float() - m.zero))


def test_peqa_qlora_and_int21_run_through_the_trainer_and_count_their_rates(tiny):
    import copy

    from methods.core.base import TrainingInputs, build
    from methods.core.model_facts import measure
    data = _lm_batches()
    knobs = {"peqa": {}, "qlora": {"r": 4}, "int21": {"r": 4, "nsamples": 4}, "wu_int4": {},
             "llm_qat": {"nsamples": 4, "length": 16}}
    for name, nominal in (("peqa", 1 - 3 / 16), ("qlora", 1 - 4 / 32), ("int21", 1 - 2 / 32), ("wu_int4", 1 - 4 / 32),
                          ("llm_qat", 1 - 4 / 32)):
        model = _two_blocks(tiny)
        method = build(name, **knobs[name])
        before = measure(model, tiny.family)
        teacher = copy.deepcopy(model) if method.uses_teacher else None
        out = method.compress_trained(model, tiny.family, TrainingInputs(_trainer(steps=1, lr=1e-3),
                                                                          lambda e: data, teacher), torch.device("cpu"))
        rec = method.result(before, measure(out, tiny.family)).to_record(16)
        assert rec["kind"] == "quantized" and rec["comp_rate"] == pytest.approx(nominal)
        assert rec["overhead_comp_rate"] < nominal   # scales, zeros and adaptors cost something
        with torch.no_grad():
            assert torch.isfinite(out(input_ids=data[0]["input_ids"]).logits).all()
        assert all(type(layer) is nn.Linear for block in tiny.family.blocks(out)
                   for layer in tiny.family.linears(block).values())


def test_nf4_lora_merged_output_equals_the_unmerged_output(tiny):
    import copy

    from methods.core.base import build
    from methods.quantization.nf4 import NF4_LEVELS
    model = copy.deepcopy(tiny.model).float()
    method = build("qlora", r=8, dropout=0.0)
    method.quantize_base(model, tiny.family, None, torch.device("cpu"))
    peft_model = method.attach(model, tiny.family)
    q = tiny.family.linears(tiny.family.blocks(peft_model.base_model.model)[0])
    base = next(iter(q.values())).base_layer.weight
    blocks = base.detach().flatten()[:64]
    assert len(torch.unique(blocks / blocks.abs().max())) <= len(NF4_LEVELS)   # the base is on the NF4 grid
    torch.manual_seed(0)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if ".lora_B." in n:
                p.normal_(0, 0.05)   # trained adaptors (B starts at zero)
    ids = torch.randint(0, 4000, (2, 24))
    peft_model.eval()
    with torch.no_grad():
        unmerged = peft_model(input_ids=ids).logits
        no_adaptor = copy.deepcopy(tiny.model).float()
        merged = peft_model.merge_and_unload()(input_ids=ids).logits
    torch.testing.assert_close(merged, unmerged, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        assert not torch.allclose(no_adaptor(input_ids=ids).logits, unmerged, atol=1e-3)


def test_llm_qat_generates_its_own_data_and_quantizes_the_kv_cache(tiny):
    import copy

    from methods.core.hooks import attached
    from methods.quantization.trained.llm_qat import self_generated
    model = copy.deepcopy(tiny.model).float()
    ids = self_generated(model, model.config.vocab_size, 3, 12, 4, 2, 0, torch.device("cpu"))
    assert ids.shape == (3, 12) and int(ids.max()) < model.config.vocab_size
    assert torch.equal(ids, self_generated(model, model.config.vocab_size, 3, 12, 4, 2, 0, torch.device("cpu")))
    with torch.no_grad():   # after the random first token, the next 4 are the model's own top-1
        top1 = model(input_ids=ids[:, :4]).logits.argmax(-1)
    assert torch.equal(ids[:, 1:5], top1)
    from methods.core.base import build
    method = build("llm_qat", kv_bits=4)
    wrapped = method.quantize(model, tiny.family)
    method.freeze(model, tiny.family, wrapped)
    block = tiny.family.linears(tiny.family.blocks(model)[0])
    assert "kv_quant" in attached(block["self_attn.k_proj"]) and "kv_quant" in attached(block["self_attn.v_proj"])
    assert "kv_quant" not in attached(block["self_attn.q_proj"])
    x = torch.randn(1, 5, block["self_attn.k_proj"].in_features)
    with torch.no_grad():
        k = block["self_attn.k_proj"](x)
    for row in k[0]:   # per token at most 2^4 − 1 symmetric levels
        assert len(torch.unique(row)) <= 16


# ---- RPTQ --------------------------------------------------------------------------------------
def test_kmeans_and_channel_clusters_partition_the_channels():
    from methods.quantization.rptq import cluster_channels, cluster_params, kmeans
    g = torch.Generator().manual_seed(0)
    pts = torch.cat([torch.randn(20, 2, generator=g) * 0.1 + c for c in (torch.tensor([0.0, 0.0]),
                                                                         torch.tensor([5.0, -5.0]),
                                                                         torch.tensor([20.0, -1.0]))])
    labels = kmeans(pts, 3)
    assert sorted(torch.bincount(labels).tolist()) == [20, 20, 20]         # the three blobs
    assert all(len(set(labels[i * 20:(i + 1) * 20].tolist())) == 1 for i in range(3))
    xmax, xmin = torch.rand(64, generator=g) * 4, -torch.rand(64, generator=g)
    xmax[::9] *= 30                                                         # outlier channels
    per_head = cluster_channels(xmax, xmin, 4, heads=4)
    assert per_head.shape == (64,) and set(per_head.tolist()) <= set(range(16))
    for h in range(4):   # clusters stay inside their head
        assert set(per_head[h * 16:(h + 1) * 16].tolist()) <= set(range(4 * h, 4 * h + 4))
    perm = torch.argsort(per_head, stable=True)
    assert sorted(perm.tolist()) == list(range(64))                         # a permutation
    assert torch.all(per_head[perm][1:] >= per_head[perm][:-1])             # clusters contiguous
    scale, zero = cluster_params(xmax, xmin, per_head, 8)
    for c in per_head.unique():   # every channel of a cluster shares its quantizer, which covers them all
        idx = per_head == c
        assert len(scale[idx].unique()) == 1 and len(zero[idx].unique()) == 1
        lo, hi = -zero[idx][0] * scale[idx][0], (255 - zero[idx][0]) * scale[idx][0]
        assert lo <= xmin[idx].min() + scale[idx][0] and hi >= xmax[idx].max() - scale[idx][0]   # zero rounds


@pytest.mark.e2e
def test_rptq_at_8_bits_is_close_to_the_full_precision_model(tiny, data_root):
    """W8A8 with per-cluster activation ranges: logits on calibration windows within 3% (relative
    Frobenius error) of the fp32 model; clustering beats one range per tensor (one cluster)."""
    import copy

    from eval.data import DataSource, calibration_windows
    from methods.core.apply import apply_method
    from methods.core.base import build
    from methods.core.calibration import TokenWindows
    ids = calibration_windows("file", DataSource.from_config(data_root, True), tiny.tokenizer, 8, 128, 0,
                              path="wikitext-2-tokens/valid.txt")
    base = _two_blocks(tiny)
    with torch.no_grad():
        dense = base(input_ids=ids).logits
    errors = {}
    for clusters in ((4, 4, 32, 4), (1, 1, 1, 1)):
        model = copy.deepcopy(base)
        method = build("rptq", wbits=8, abits=8, clusters=clusters)
        apply_method(method, model, tiny.family, TokenWindows(ids), torch.device("cpu"), progress=False)
        with torch.no_grad():
            out = model(input_ids=ids).logits
        errors[clusters] = float((out - dense).norm() / dense.norm())
    assert errors[(4, 4, 32, 4)] < 0.03, errors
    assert errors[(4, 4, 32, 4)] < errors[(1, 1, 1, 1)], errors


def test_mrem_fits_each_block_to_its_full_precision_output():
    """Each block's reconstruction error falls during its fit, the result is on a 2-bit grid, and
    the fitted model is closer to the full-precision one than round-to-nearest at the same bits."""
    import copy

    from methods.core.apply import apply_method
    from methods.core.arch import FAMILIES
    from methods.core.base import build
    from methods.core.calibration import InputBatches
    fam = FAMILIES["bert"]
    dense = tiny_bert(dropout=0.0)
    data = [{k: v for k, v in b.items() if k != "labels"} for b in batches(4, size=8)]
    with torch.no_grad():
        ref = dense(**data[0]).logits
    outs = {}
    for name, kw in (("mrem", {"wbits": 2, "abits": 16, "steps": 60, "lr": 1e-3}), ("rtn", {"wbits": 2, "sym": True})):
        model = copy.deepcopy(dense)
        method = build(name, **kw)
        apply_method(method, model, fam, InputBatches(data), torch.device("cpu"), progress=False)
        with torch.no_grad():
            outs[name] = model(**data[0]).logits
        if name == "mrem":
            assert all(f["mse_last_step"] < f["mse_first_step"] for f in method.fits)
            w = fam.linears(fam.blocks(model)[0])["attention.self.query"].weight
            assert all(len(torch.unique(row)) <= 3 for row in w)    # symmetric 2-bit: {−s, 0, s} per row
    err = {n: float((o - ref).norm()) for n, o in outs.items()}
    assert err["mrem"] < err["rtn"], err
