"""The low-bit rows of Table 4 and FineQuant: ternary weight splitting (BinaryBERT), elastic
binarization and multi-step distillation (BiT), SensiMix's mixed blocks, PreQuant's frozen codes
with trainable outlier columns, Mr.BiQ's binary coding, FineQuant's adaptive groups."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tiny_encoders import batches, tiny_bert


def _trainer(steps: int = 6, lr: float = 1e-2):
    from methods.training.trainer import TrainConfig, Trainer
    return Trainer(TrainConfig(steps=steps, batch_size=4, lr=lr, warmup_ratio=0.0, weight_decay=0.0),
                   torch.device("cpu"), progress=False)


def _weights() -> list[torch.Tensor]:
    torch.manual_seed(0)
    heavy = torch.distributions.StudentT(3.0).sample((48, 64)) * 0.02
    return [torch.randn(32, 64) * 0.05, heavy, tiny_bert(dropout=0.0).bert.encoder.layer[0].intermediate.dense.weight]


# ---- BinaryBERT ---------------------------------------------------------------------------------
@pytest.mark.parametrize("i", range(3))
def test_ternary_weight_splitting_is_exact(i):
    """w¹ + w² = w, and the two binarized halves add up to the ternary weight: the split model
    computes what the ternary model computed."""
    from methods.quantization.trained.binarybert import SplitBinaryLinear, ternary_weight_split
    from methods.quantization.trained.fake_quant import BinaryWeight, FakeQuantLinear, TernaryWeight
    w = _weights()[i].detach().clone()
    w1, w2 = ternary_weight_split(w)
    torch.testing.assert_close(w1 + w2, w)
    t = TernaryWeight()(w)
    torch.testing.assert_close(BinaryWeight()(w1) + BinaryWeight()(w2), t, atol=1e-6, rtol=0)
    assert len(torch.unique(BinaryWeight()(w1))) == 2 and len(torch.unique(t)) == 3
    lin = nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        lin.weight.copy_(w)
    x = torch.randn(5, w.shape[1])
    ternary = FakeQuantLinear(copy.deepcopy(lin), TernaryWeight())(x)
    split = SplitBinaryLinear(copy.deepcopy(lin), w1, w2, None)(x)
    torch.testing.assert_close(split, ternary, atol=1e-5, rtol=1e-5)


# ---- BiT --------------------------------------------------------------------------------------------
def test_elastic_binarization_gradients_are_bits():
    """x̂ = α·sign(x − β); ∂x̂/∂α = sign(s) − s·1[|s| ≤ 1] and ∂x̂/∂β = −1[|s| ≤ 1] with s = (x − β)/α."""
    from methods.quantization.trained.bit import elastic
    x = torch.tensor([-2.0, -0.3, 0.1, 0.45, 3.0])
    alpha, beta = torch.tensor(0.5, requires_grad=True), torch.tensor(0.05, requires_grad=True)
    y = elastic(x, alpha, beta, 1)
    s = (x - 0.05) / 0.5
    torch.testing.assert_close(y.detach(), 0.5 * torch.sign(s))
    for i in range(len(x)):
        ga, gb = torch.autograd.grad(elastic(x, alpha, beta, 1)[i], (alpha, beta))
        inside = float(s[i].abs() <= 1)
        assert float(ga) == pytest.approx(float(torch.sign(s[i])) - float(s[i]) * inside, abs=1e-6)
        assert float(gb) == pytest.approx(-inside, abs=1e-6)
    y2 = elastic(x, alpha, beta, 2)    # 2 bits: four levels α·{−2, −1, 0, 1}
    assert set(torch.round(y2.detach() / 0.5).tolist()) <= {-2.0, -1.0, 0.0, 1.0}


# ---- the QAT rows through the trainer ------------------------------------------------------------
@pytest.mark.parametrize("name,kw,nominal", [("binarybert", {}, 1 - 2 / 32), ("bit", {}, 1 - 1 / 32),
                                             ("sensimix", {"probe_batches": 2}, None),
                                             ("prequant", {"outlier_ratio": 0.125, "probe_batches": 2}, 1 - 4 / 32)])
def test_low_bit_rows_train_through_the_trainer_and_land_on_their_grids(name, kw, nominal):
    from methods.core.arch import FAMILIES
    from methods.core.base import TrainingInputs, build
    from methods.core.model_facts import measure
    fam = FAMILIES["bert"]
    teacher = tiny_bert(dropout=0.0, qa=True).requires_grad_(False)
    model = tiny_bert(dropout=0.0, qa=True)
    data = batches(3, qa=True)
    method = build(name, **kw)
    start = copy.deepcopy(model)
    before = measure(model, fam)
    out = method.compress_trained(model, fam, TrainingInputs(_trainer(), lambda e: data, teacher),
                                  torch.device("cpu"))
    rec = method.result(before, measure(out, fam)).to_record(32)
    blocks = fam.blocks(out)
    layers = {f"{i}.{n}": m for i, b in enumerate(blocks) for n, m in fam.linears(b).items()}
    assert all(type(m) is nn.Linear for m in layers.values())
    levels = {k: max(len(torch.unique(row)) for row in m.weight) for k, m in layers.items()}
    if name == "binarybert":       # ±α¹ ± α² per matrix
        assert all(len(torch.unique(m.weight)) <= 4 for m in layers.values())
        assert method.facts["split_max_relative_error"] < 1e-5
    elif name == "bit":            # ±α per row, and binary activations
        assert max(levels.values()) <= 2
        x = torch.randn(3, 32)
        seen = []
        h = layers["0.attention.self.query"].register_forward_pre_hook(lambda m, a: seen.append(a[0]))
        with torch.no_grad():
            layers["0.attention.self.query"](x)
        h.remove()
        assert len(seen) == 1
    elif name == "sensimix":       # 1-bit feed-forwards in the MP blocks, 8 bits elsewhere
        mp = set(method.facts["mp_blocks"])
        assert len(method.facts["sensitivity"]) == len(blocks)
        assert len(mp) == method.blocks_for_target(fam, blocks)    # the count nearest 4 bits on average
        least = sorted(range(len(blocks)), key=lambda i: method.facts["sensitivity"][i])[:len(mp)]
        assert mp == set(least)                                     # the least sensitive blocks
        for k, n in levels.items():
            i, lname = k.split(".", 1)
            one_bit = int(i) in mp and lname in ("intermediate.dense", "output.dense")
            assert (n <= 2) if one_bit else (2 < n <= 255), (k, n)
        counts = {k: m.weight.numel() for k, m in layers.items()}
        avg = sum(c * (1 if (int(k.split(".")[0]) in mp and k.split(".", 1)[1] in ("intermediate.dense",
                                                                                  "output.dense")) else 8)
                  for k, c in counts.items()) / sum(counts.values())
        nominal = 1 - avg / 32
    elif name == "prequant":       # the codes frozen: only the outlier columns (and the head) moved
        from methods.quantization.quantizer import quantize_weight
        moved_cols = 0
        for k, m in layers.items():
            i, lname = k.split(".", 1)
            codes = quantize_weight(fam.linears(fam.blocks(start)[int(i)])[lname].weight, method.spec).dequantize()
            differs = (m.weight != codes).any(0)
            assert int(differs.sum()) <= -(-m.weight.shape[1] // 8), k   # ≤ 1/8 of the inputs: the outliers
            moved_cols += int(differs.sum())
        assert moved_cols > 0
        assert 0 < method.tuned_params < sum(p.numel() for p in out.parameters()) * 0.2
    assert rec["kind"] == "quantized" and rec["comp_rate"] == pytest.approx(nominal)
    b = {k: v for k, v in data[0].items() if "positions" not in k}
    with torch.no_grad():
        assert torch.isfinite(out(**b).start_logits).all()


# ---- Mr.BiQ ---------------------------------------------------------------------------------------
def test_binary_coding_codes_are_nearest_and_scales_are_least_squares():
    from methods.quantization.mrbiq import _levels, bcq_codes, bcq_fit, bcq_refit
    torch.manual_seed(0)
    w = torch.randn(6, 40)
    alpha = bcq_fit(w, 2)
    codes = bcq_codes(w, alpha)
    levels, _ = _levels(alpha)
    q = (codes * alpha.unsqueeze(1)).sum(-1)
    brute = levels.gather(1, (w.unsqueeze(-1) - levels.unsqueeze(1)).abs().argmin(-1))
    torch.testing.assert_close(q, brute)
    for r in range(w.shape[0]):   # the least-squares scales of fixed codes
        ls = torch.linalg.lstsq(codes[r].double(), w[r].double().unsqueeze(-1)).solution.squeeze(-1)
        torch.testing.assert_close(bcq_refit(w, codes)[r].double(), ls, atol=1e-4, rtol=1e-4)
    greedy = w.abs().mean(1, keepdim=True) * torch.sign(w)
    greedy = greedy + (w - greedy).abs().mean(1, keepdim=True) * torch.sign(w - greedy)
    assert (w - q).norm() <= (w - greedy).norm() + 1e-6    # the alternating rounds never lose to greedy


def test_mrbiq_fits_each_block_and_stores_binary_codes():
    from methods.core.apply import apply_method
    from methods.core.arch import FAMILIES
    from methods.core.base import build
    from methods.core.calibration import InputBatches
    from methods.core.model_facts import measure
    fam = FAMILIES["bert"]
    model = tiny_bert(dropout=0.0)
    data = [{k: v for k, v in b.items() if k != "labels"} for b in batches(4, size=8)]
    method = build("mrbiq", wbits=2, abits=16, steps=40, lr=1e-3, rounds=2)
    before = measure(model, fam)
    apply_method(method, model, fam, InputBatches(data), torch.device("cpu"), progress=False)
    assert all(f["mse_last_step"] < f["mse_first_step"] for f in method.fits)
    for block in fam.blocks(model):
        for layer in fam.linears(block).values():
            assert all(len(torch.unique(row)) <= 4 for row in layer.weight)   # ±α₁ ± α₂ per row
    rec = method.result(before, measure(model, fam)).to_record(32)
    assert rec["comp_rate"] == pytest.approx(1 - (2 + 2 * 16 / 32) / 32, abs=0.01)   # 32-wide rows, fp16 α


# ---- FineQuant -------------------------------------------------------------------------------------
def test_finequant_refines_only_the_matrices_with_outliers():
    from methods.core.base import build
    from methods.quantization.finequant import adaptive_group
    from methods.quantization.quantizer import QuantSpec, quantize_weight
    torch.manual_seed(0)
    clean = torch.randn(64, 512) * 0.02
    spiky = clean.clone()
    spiky[3, 17] = 2.0          # one outlier: its row's scale is 100x the others'
    g_clean, q_clean = adaptive_group(clean, 4, 64, 2.0)
    g_spiky, q_spiky = adaptive_group(spiky, 4, 64, 2.0)
    assert g_clean == 512 and g_spiky < 512
    direct = quantize_weight(spiky, QuantSpec(bits=4, sym=True, granularity="group", group_size=g_spiky)).dequantize()
    torch.testing.assert_close(q_spiky.dequantize(), direct)
    m = build("finequant")
    with torch.no_grad():
        lin = nn.Linear(512, 64, bias=False)
        lin.weight.copy_(spiky)
        m.compress(0, "l", lin, None)
    assert m.groups == {"0.l": g_spiky} and m.refined == 1
    assert m.summary()["bits_per_weight"] == pytest.approx(4 + 16 / g_spiky)


# ---- Quant-Noise, iPQ ---------------------------------------------------------------------------------
def test_block_drop_noise_and_product_codes():
    from methods.quantization.trained.quant_noise import BlockDrop, ProductCodes
    torch.manual_seed(0)
    w = torch.randn(64, 32)
    noise = BlockDrop(0.25, 4).train()
    y = noise(w)
    blocks = y.reshape(64, 8, 4)
    dropped = (blocks == 0).all(-1)
    assert 0.15 < float(dropped.float().mean()) < 0.35                       # about p of the blocks
    kept = ~dropped
    torch.testing.assert_close(blocks[kept], (w.reshape(64, 8, 4) / 0.75)[kept])
    assert torch.equal(noise.eval()(w), w)
    pq = ProductCodes(w, 4, 16)
    q = pq(w)
    assert len(torch.unique(q.reshape(-1, 4), dim=0)) <= 16
    for c in range(pq.codewords.shape[0]):                                   # each codeword: its blocks' mean
        members = w.reshape(-1, 4)[pq.assign.flatten() == c]
        if len(members):
            torch.testing.assert_close(pq.codewords[c].detach(), members.mean(0), atol=1e-5, rtol=1e-5)
    assert pq.bits == pytest.approx(4 / 4)                                    # log2(16) index bits per 4 weights


def test_quant_noise_ipq_trains_codewords_and_counts_its_codebooks():
    from methods.core.arch import FAMILIES
    from methods.core.base import TrainingInputs, build
    from methods.core.model_facts import measure
    fam = FAMILIES["bert"]
    model = tiny_bert(dropout=0.0, qa=True)
    data = batches(3, qa=True)
    method = build("quant_noise", scheme="ipq", p=0.2, block_size=4, centroids=16)
    before = measure(model, fam)
    out = method.compress_trained(model, fam, TrainingInputs(_trainer(), lambda e: data, None), torch.device("cpu"))
    rec = method.result(before, measure(out, fam)).to_record(32)
    weights, stored = 0, 0
    for block in fam.blocks(out):
        for layer in fam.linears(block).values():
            assert len(torch.unique(layer.weight.reshape(-1, 4), dim=0)) <= 16
            weights += layer.weight.numel()
            stored += layer.weight.numel() * 1.0 + 16 * 4 * 32               # 1 index bit a weight + the fp32 codebook
    assert rec["comp_rate"] == pytest.approx(1 - stored / (32 * weights))
    assert method.facts["noise_steps"] == 3 and method.facts["codeword_steps"] == 3
