"""Encoder compression primitives on the real MiniLM (BERT architecture)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import minilm_path
from methods.core.apply import apply_method
from methods.core.arch import family_of
from methods.core.base import build
from methods.core.calibration import InputBatches
from methods.core.model_facts import measure
from methods.quantization.codebooks import gaussian_outliers
from methods.quantization.powerquant import power_quantize
from methods.pruning.encoder_units import encoder_flops, layer_shapes, masks_applied, prune_with_masks
from methods.quantization.quantizer import QuantSpec, quantize_weight


@pytest.fixture
def minilm():
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer
    path = minilm_path()
    torch.manual_seed(0)  # the QA head is new: seeded
    model = AutoModelForQuestionAnswering.from_pretrained(path, use_safetensors=True).eval()
    return model, AutoTokenizer.from_pretrained(path)


def _compress(method, model, fam, batches) -> tuple[nn.Module, dict]:
    """Apply an encoder method and return the model with its typed result as the record holds it."""
    before = measure(model, fam)
    model, _ = apply_method(method, model, fam, InputBatches(batches), torch.device("cpu"))
    return model, method.result(before, measure(model, fam)).to_record(32)


def _inputs(tok):
    return tok(["Who wrote the novel?", "Where is the river?"],
               ["The novel was written by a young author in Warsaw.", "The river flows north through the city."],
               padding=True, return_tensors="pt")


def test_zero_masks_remove_heads_and_neurons_without_changing_outputs(minilm):
    model, tok = minilm
    fam = family_of(model.config.model_type)
    L, H, N = 6, 12, 1536
    g = torch.Generator().manual_seed(1)
    head_mask = (torch.rand(L, H, generator=g) > 0.4).float()
    neuron_mask = (torch.rand(L, N, generator=g) > 0.5).float() * (0.5 + torch.rand(L, N, generator=g))
    x = _inputs(tok)
    with torch.no_grad(), masks_applied(model, fam, head_mask, neuron_mask):
        masked = model(**x).start_logits
    before = sum(p.numel() for p in model.parameters())
    prune_with_masks(model, fam, head_mask, neuron_mask)
    with torch.no_grad():
        pruned = model(**x).start_logits
    torch.testing.assert_close(pruned, masked, rtol=1e-4, atol=1e-4)
    assert layer_shapes(model, fam) == [(int(head_mask[i].sum()), int((neuron_mask[i] > 0).sum())) for i in range(L)]
    assert sum(p.numel() for p in model.parameters()) < before


def test_flops_match_a_direct_count(minilm):
    model, tok = minilm
    fam = family_of(model.config.model_type)
    prune_with_masks(model, fam, (torch.arange(12) % 3 != 0).float().expand(6, 12).clone(),
                     (torch.arange(1536) % 4 != 0).float().expand(6, 1536).clone())
    S = 16
    counted = []
    blocks = fam.blocks(model)
    hooks = [m.register_forward_hook(lambda mod, i, o: counted.append(2 * i[0].shape[-2] * mod.in_features
                                                                      * mod.out_features))
             for b in blocks for m in b.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        model(input_ids=torch.randint(1000, 2000, (1, S)))
    for h in hooks:
        h.remove()
    attention = sum(2 * 2 * S * S * heads * 32 for heads, _ in layer_shapes(model, fam))
    assert encoder_flops(model, fam, S) == sum(counted) + attention
    assert layer_shapes(model, fam)[0] == (8, 1152)


def _layer(out_f=32, in_f=64, seed=0):
    torch.manual_seed(seed)
    layer = nn.Linear(in_f, out_f, bias=False)
    layer.weight.data = torch.randn(out_f, in_f) * 0.05
    layer.weight.data[0, :3] = torch.tensor([1.0, -0.9, 0.8])  # outliers
    return layer


@pytest.mark.parametrize("name", ["gobo", "kmeans_quant"])
def test_codebook_weights_lie_on_their_centroids_and_gobo_outliers_are_exact(name):
    layer = _layer()
    W0 = layer.weight.data.clone()
    method = build(name, wbits=3)
    method.compress(0, "l", layer, None)
    W = layer.weight.data
    out = gaussian_outliers(W0, 4.0) if name == "gobo" else torch.zeros_like(W0, dtype=torch.bool)
    if name == "gobo":
        z = (W0 - W0.mean()).abs() / W0.std()
        assert torch.equal(out, z > 4.0) and out.sum() == 3
        assert torch.equal(W[out], W0[out])  # outliers kept exactly
    assert len(torch.unique(W[~out])) <= 8
    # each inlier sits on the centroid nearest to its original value
    cents = torch.unique(W[~out])
    nearest = cents[(W0[~out].unsqueeze(1) - cents.unsqueeze(0)).abs().argmin(1)]
    assert torch.equal(W[~out], nearest)


def test_powerquant_with_exponent_one_is_uniform_and_search_is_never_worse():
    W = torch.randn(16, 64) ** 3  # heavy-tailed: a < 1 helps
    uniform = quantize_weight(W, QuantSpec(bits=4, sym=True, granularity="channel")).dequantize()
    torch.testing.assert_close(power_quantize(W, 4, 1.0), uniform)
    layer = nn.Linear(64, 16, bias=False)
    layer.weight.data = W.clone()
    m = build("powerquant", wbits=4)
    m.compress(0, "l", layer, None)
    assert ((layer.weight.data - W) ** 2).sum() < ((uniform - W) ** 2).sum()
    assert m.exponents["0.l"] < 1.0


def test_q8bert_weights_sit_on_the_int8_grid():
    layer = _layer()
    W0 = layer.weight.data.clone()
    m = build("q8bert")
    from methods.core.stats import ACT_ABSMAX, LinearStats
    st = LinearStats(64, frozenset({ACT_ABSMAX}), torch.device("cpu"))
    st.add_batch(torch.randn(10, 64))
    m.compress(0, "l", layer, st)
    scale = W0.abs().max() / 127
    codes = layer.weight.data / scale
    torch.testing.assert_close(codes, torch.round(codes), atol=1e-4, rtol=0)
    assert float(codes.abs().max()) == pytest.approx(127, abs=1e-3)


@pytest.fixture
def qa_batches(minilm, data_root):
    from eval.settings import ModelSettings, RunSettings
    from eval.tasks.squad import SQuADDevSplit
    run = RunSettings(ModelSettings("minilm", "unused"), data_root=str(data_root), offline=True)
    task = SQuADDevSplit(run, {"name": "squad_dev_split", "max_length": 128, "doc_stride": 64})
    return task.training_batches(minilm[1], batch_size=8, seed=0, limit=16, examples=task.train_examples()[:40])


def test_mask_search_is_the_best_split_within_the_budget():
    from methods.pruning.kwon import search_masks
    head_imp = torch.tensor([[5.0, 1.0], [0.5, 4.0]])
    neuron_imp = torch.tensor([[3.0, 0.2, 0.1], [2.0, 0.3, 2.5]])
    hm, nm = search_masks(head_imp, neuron_imp, head_flops=3.0, neuron_flops=1.0, budget=8.0)
    # brute force over every mask within the budget
    import itertools
    best = max((sum(h * i for h, i in zip(hs, head_imp.flatten().tolist()))
                + sum(n * i for n, i in zip(ns, neuron_imp.flatten().tolist())), hs, ns)
               for hs in itertools.product([0, 1], repeat=4) for ns in itertools.product([0, 1], repeat=6)
               if 3 * sum(hs) + sum(ns) <= 8)
    assert float((hm * head_imp).sum() + (nm * neuron_imp).sum()) == pytest.approx(best[0])
    assert 3 * hm.sum() + nm.sum() <= 8


def test_rearrangement_keeps_counts_and_never_raises_the_fisher_loss():
    from methods.pruning.kwon import rearrange
    g = torch.randn(64, 10, generator=torch.Generator().manual_seed(0))
    g[:, 0] *= 5  # a unit whose removal is costly
    mask = torch.tensor([0.0, 1, 1, 0, 1, 1, 0, 1, 1, 1])
    F = g.t() @ g / 64
    loss = lambda m: float((1 - m) @ F @ (1 - m)) / 2  # noqa: E731
    new = rearrange(mask, g)
    assert new.sum() == mask.sum() and loss(new) <= loss(mask)
    assert new[0] == 1  # the costly unit is restored


@pytest.mark.e2e
def test_least_squares_mask_tuning_reduces_the_reconstruction_error(minilm, qa_batches):
    from methods.pruning.kwon import layer_contributions, least_squares_mask
    model, _ = minilm
    fam = family_of(model.config.model_type)
    stats = layer_contributions(model, fam, qa_batches, torch.device("cpu"))
    layer = 3
    binary = torch.ones(12)
    binary[[0, 4, 7, 9]] = 0
    tuned = least_squares_mask(stats[layer]["head_gram"], stats[layer]["head_target"], binary)
    assert torch.all(tuned[binary == 0] == 0) and not torch.equal(tuned, binary)

    def error(head_mask_layer):
        hm = torch.ones(6, 12)
        hm[layer] = head_mask_layer
        o = fam.blocks(model)[layer].attention.output.dense
        outs = {}
        h1 = o.register_forward_hook(lambda _m, i, out: outs.setdefault("y", []).append(out - o.bias))
        with torch.no_grad():
            for b in qa_batches:
                inputs = {k: b[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in b}
                model(**inputs)
                with masks_applied(model, fam, hm, torch.ones(6, 1536)):
                    model(**inputs)
        h1.remove()
        ys = outs["y"]
        masks = [b["attention_mask"].bool() for b in qa_batches]
        return sum(float(((ys[2 * i + 1] - ys[2 * i])[masks[i]]) .pow(2).sum()) for i in range(len(qa_batches)))

    assert error(tuned) < error(binary)


# ---- KCM ------------------------------------------------------------------------------------------

def test_kcm_representative_power_is_low_for_redundant_neurons():
    from methods.pruning.kcm import representative_power
    g = torch.Generator().manual_seed(0)
    cluster = torch.randn(1, 8, generator=g) + 0.01 * torch.randn(5, 8, generator=g)  # five near-copies
    loners = 10 * torch.eye(8)[:3]                                                      # three distinct ones
    r2 = representative_power(torch.cat([cluster, loners]), sigma=2.0)
    assert r2[5:].min() > 0.9                      # a neuron nobody else can represent keeps its power
    assert r2[:5].max() < 0.5                      # copies share it
    assert r2[:5].sum() == pytest.approx(1.0, abs=0.1)


@pytest.mark.e2e
def test_kcm_removes_the_lowest_scored_neurons_uniformly_and_meets_the_flops_rate(minilm, qa_batches):
    from methods.pruning.kcm import KCM
    model, tok = minilm
    fam = family_of(model.config.model_type)
    method = build("kcm", flops_rate=0.2, seq_len=128, tol=1e-2)
    scores = KCM(tol=1e-2).neuron_scores(model, fam, qa_batches, torch.device("cpu"))
    W_before = [b.output.dense.weight.detach().clone() for b in fam.blocks(model)]
    model, s = _compress(method, model, fam, qa_batches)
    assert 0.2 <= s["comp_rate"] < 0.21 and s["granularity"] == "N"
    shapes = layer_shapes(model, fam)
    assert all(h == 12 for h, _ in shapes) and len({n for _, n in shapes}) == 1  # neurons only, same count
    for i, block in enumerate(fam.blocks(model)):
        kept = torch.argsort(scores[i], descending=True)[: shapes[i][1]].sort().values
        torch.testing.assert_close(block.output.dense.weight, W_before[i][:, kept])


def test_kcm_refuses_a_rate_beyond_the_ffn_share(minilm):
    from methods.pruning.kcm import uniform_neuron_fraction
    model, _ = minilm
    with pytest.raises(ValueError, match="neurons only"):
        uniform_neuron_fraction(model, family_of(model.config.model_type), 128, 0.9)


# ---- Kprune ---------------------------------------------------------------------------------------

def test_kprune_mask_search_keeps_the_best_units_that_fit():
    from methods.pruning.kprune import keep_within_budget
    scores = torch.tensor([0.1, 5.0, 3.0, 0.5, 4.0])
    flops = torch.tensor([1.0, 2.0, 2.0, 1.0, 2.0])
    keep = keep_within_budget(scores, flops, budget=5.0)   # 2 + 2 fits (< 5), a third of 2 does not
    assert keep.tolist() == [False, True, False, False, True]


def test_kprune_weight_tuning_is_the_least_squares_solution():
    from methods.pruning.kprune import reconstruct
    g = torch.Generator().manual_seed(0)
    A, Y = torch.randn(200, 12, generator=g), torch.randn(200, 5, generator=g)
    W = reconstruct(A, Y, damp=0.0)
    torch.testing.assert_close(W, torch.linalg.lstsq(A, Y).solution, rtol=1e-4, atol=1e-5)


@pytest.mark.e2e
def test_kprune_meets_the_budget_and_its_weight_tuning_preserves_the_predictions(minilm, qa_batches):
    from methods.pruning.kprune import distill_loss, soft_targets
    base, tok = minilm
    fam = family_of(base.config.model_type)
    batches = qa_batches[:1]
    with torch.no_grad():
        targets = [soft_targets(base, b, "cpu", 2.0) for b in batches]
    losses = {}
    for tune in (True, False):
        import copy
        model = copy.deepcopy(base)
        method = build("kprune", flops_rate=0.4, seq_len=128, tune=tune)
        model, s = _compress(method, model, fam, batches)
        assert 0.4 <= s["comp_rate"] < 0.45 and s["params_after"] < s["params_before"]
        with torch.no_grad():
            losses[tune] = sum(float(distill_loss(model, b, t, "cpu", 2.0)) for b, t in zip(batches, targets))
    assert losses[True] < losses[False]


# ---- Outlier Suppression --------------------------------------------------------------------------

def test_token_wise_clipping_follows_the_reference_rule():
    from methods.quantization.outlier_suppression import token_clip_range
    tok_max = torch.tensor([1.0, 2.0, 3.0, 4.0, 100.0])
    tok_min = torch.tensor([-1.0, -2.0, -50.0, -3.0, -4.0])
    # ratio 0.75: the 0.75-quantile of |maxima| (1, 2, 3, 4, 100) is 4 (index 3 exactly), so the
    # outlier token (100) is left out and the range ends at the largest maximum left, 4; likewise
    # the minima's quantile of (1, 2, 50, 3, 4) is 4, so -50 goes and the range starts at -4
    lo, hi = token_clip_range(tok_min, tok_max, 0.75)
    assert (float(lo), float(hi)) == (-4.0, 4.0)
    # ratio 0.7: quantile index 2.8, 3 + 0.8 * (4 - 3) = 3.8; the extremes left are 3 and -3
    lo, hi = token_clip_range(tok_min, tok_max, 0.7)
    assert (float(lo), float(hi)) == (-3.0, 3.0)
    lo, hi = token_clip_range(tok_min, tok_max, 1.0)                 # ratio 1: plain min-max
    assert (float(lo), float(hi)) == (-50.0, 100.0)


def test_clipping_grid_is_the_references():
    from methods.quantization.outlier_suppression import clip_ratios
    # cac_step_iters: step = 0.01·128·32 / (batch·length) to two digits (at most 0.01); 0.3 / step ratios at 6 bits
    r = clip_ratios(6, 32, 384)                                       # the reference's SQuAD setting
    assert len(r) == 90 and r[0] == 1.0 and r[1] == pytest.approx(1 - 0.0033)
    r = clip_ratios(6, 32, 192)
    assert len(r) == 44 and r[1] == pytest.approx(1 - 0.0067)
    assert len(clip_ratios(4, 32, 128)) == 90 and len(clip_ratios(8, 32, 128)) == 10   # step 0.01
    assert len(clip_ratios(5, 32, 128)) == 90                         # undefined widths: the span of the width below


def test_lsq_plus_gradients_match_their_closed_form():
    from methods.quantization.outlier_suppression import fake_quant
    x = torch.tensor([-3.0, -0.26, 0.1, 0.74, 2.0, 9.0], dtype=torch.float64)
    scale = torch.tensor(0.25, dtype=torch.float64, requires_grad=True)
    zero = torch.tensor(4.3, dtype=torch.float64, requires_grad=True)   # rounded to 4 in the forward
    out = fake_quant(x, scale, zero, 15, grad_factor=0.5)
    out.sum().backward()
    q = torch.round(x / 0.25) + 4
    clipped = (q < 0) | (q > 15)
    bound = q.clamp(0, 15)
    torch.testing.assert_close(out.detach(), (bound - 4) * 0.25)
    # evaluation (no learning) rounds the learnt zero point too, as the reference's forward does
    torch.testing.assert_close(fake_quant(x, scale.detach(), zero.detach(), 15), (bound - 4) * 0.25)
    # unclipped: d/ds = round(x/s) − x/s, d/dz = 0; clipped at bound B: d/ds = B − z, d/dz = −s; all × 0.5
    ds = torch.where(clipped, bound - 4, torch.round(x / 0.25) - x / 0.25)
    dz = torch.where(clipped, torch.full_like(x, -0.25), torch.zeros_like(x))
    assert float(scale.grad) == pytest.approx(0.5 * float(ds.sum()))
    assert float(zero.grad) == pytest.approx(0.5 * float(dz.sum()))


def test_probability_hook_attention_equals_the_models_attention_on_padded_batches(minilm):
    import copy
    from methods.core.hooks import attach_attention_probs
    model, tok = minilm
    x = _inputs(tok)
    assert (x["attention_mask"] == 0).any()                          # the batch has padding
    seen = []
    hooked = copy.deepcopy(model)
    att = [m for n, m in hooked.named_modules() if n.endswith("attention.self")]
    attach_attention_probs(hooked, {m: (lambda p: seen.append(p) or p) for m in att})
    with torch.no_grad():
        ref, out = model(**x).start_logits, hooked(**x).start_logits
    keep = x["attention_mask"] == 1
    torch.testing.assert_close(out[keep], ref[keep], atol=1e-4, rtol=1e-4)
    assert len(seen) == len(att)
    # padded keys get no probability; each query's probabilities sum to one
    assert float(seen[0][1, :, :, ~keep[1]].abs().max()) == 0.0
    torch.testing.assert_close(seen[0].sum(-1), torch.ones_like(seen[0].sum(-1)))


def test_outlier_suppression_quantizes_where_the_reference_does(minilm):
    from methods.quantization.outlier_suppression import OutlierSuppression
    model, _ = minilm
    fam = family_of(model.config.model_type)
    L = model.config.num_hidden_layers
    names = [p.quant.name for p in OutlierSuppression().quant_points(model, fam)]
    # embeddings LN; per layer Q, K, V, probabilities, context, two LNs, GELU output (QA: last LN too)
    assert len(names) == 1 + 8 * L
    assert names[:8] == ["embeddings.LayerNorm", "0.attention.self.query", "0.attention.self.key",
                         "0.attention.self.value", "0.attention.probs", "0.attention.output.dense",
                         "0.attention.output.LayerNorm", "0.output.dense"]
    assert names[-1] == f"{L - 1}.output.LayerNorm"
    linears = [p.quant.name for p in OutlierSuppression(scope="linears").quant_points(model, fam)]
    assert len(linears) == 1 + 4 * L - 1 and not any("self" in n or "probs" in n for n in linears)


@pytest.mark.e2e
def test_outlier_suppression_migrates_gamma_into_the_weights_exactly(minilm, qa_batches):
    model, tok = minilm
    fam = family_of(model.config.model_type)
    x = _inputs(tok)
    with torch.no_grad():
        ref = model(**x).start_logits
    gamma = fam.blocks(model)[0].attention.output.LayerNorm.weight.detach().clone()
    W0 = fam.blocks(model)[0].intermediate.dense.weight.detach().clone()
    # one clipping ratio (1.0, no clipping): the migration is what is checked, not the ratio search
    method = build("outlier_suppression", wbits=8, abits=16, learn_epochs=0, clip_step=0.01, clip_span=0.01)
    model, _ = apply_method(method, model, fam, InputBatches(qa_batches[:2]), torch.device("cpu"))
    with torch.no_grad():
        out = model(**x).start_logits
    keep = x["attention_mask"] == 1
    err = (out - ref)[keep].pow(2).mean() / ref[keep].pow(2).mean()
    assert float(err) < 1e-2                                         # only 8-bit weight noise remains
    # the FFN input linear reads the migrated LayerNorm: it holds Q(W·diag(γ))·diag(γ)⁻¹
    expected = quantize_weight(W0 * gamma, QuantSpec(bits=8, sym=True, granularity="channel")).dequantize() / gamma
    torch.testing.assert_close(fam.blocks(model)[0].intermediate.dense.weight.detach(), expected)


# ---- Kwon et al.: the reference's Fisher, rearrangement and tuning --------------------------------

def test_greedy_rearrangement_returns_the_reference_procedures_mask():
    from methods.pruning.kwon import greedy_rearrange
    # gradients of 2 mini-batches (rows) for 4 units (columns); squared norms 1, 1.21, 1.44, 18
    grads = torch.tensor([[1.0, 0.0, -1.2, 3.0],
                          [0.0, 1.1, 0.0, 3.0]])
    mask = torch.tensor([1.0, 1.0, 0.0, 0.0])         # 2 units pruned (which ones does not matter)
    # by hand: start pruned = {u0, u1} (least important). Add u2: leaving out u0 gives
    # |(-1.2, 1.1)|² = 2.65, u1 gives |(-0.2, 0)|² = 0.04, u2 gives |(1, 1.1)|² = 2.21, so u1 is kept.
    # Add u3: pruned {u0, u2, u3} sums to (2.8, 3); leaving out u3 gives 0.04 (u0: 12.24, u2: 25),
    # so u3 is kept. Pruned {u0, u2}: the opposite gradients cancel, unlike top-k's {u0, u1}.
    assert greedy_rearrange(mask, grads).tolist() == [0.0, 1.0, 0.0, 1.0]
    assert greedy_rearrange(torch.ones(4), grads).tolist() == [1.0] * 4        # nothing pruned: unchanged


def test_batch_fisher_is_the_sum_of_squared_minibatch_gradients():
    from methods.core.arch import family_of
    from methods.pruning.encoder_units import masks_applied
    from methods.core.calibration import rebatch
    from methods.pruning.kwon import minibatch_mask_gradients
    from tiny_encoders import batches, tiny_bert
    model = tiny_bert(layers=2, qa=True, dropout=0.0).double()
    fam = family_of(model.config.model_type)
    data = batches(3, size=4, qa=True)                                  # 12 samples -> 2 mini-batches of 6
    gh, gn = minibatch_mask_gradients(model, fam, data, 2, 4, 64, torch.device("cpu"), batch_size=6)
    assert gh.shape == (2, 2, 4) and gn.shape == (2, 2, 64)
    eps = 1e-5

    def loss(batch, layer, head=None, neuron=None, delta=0.0):
        hm, nm = torch.ones(2, 4, dtype=torch.float64), torch.ones(2, 64, dtype=torch.float64)
        if head is not None:
            hm[layer, head] += delta
        else:
            nm[layer, neuron] += delta
        with torch.no_grad(), masks_applied(model, fam, hm, nm):
            return float(model(**batch).loss)

    for (layer, head, neuron) in ((1, 2, None), (0, None, 17)):
        g = [(loss(b, layer, head, neuron, eps) - loss(b, layer, head, neuron, -eps)) / (2 * eps)
             for b in rebatch(data, 6)]
        fisher = sum(x * x for x in g)
        got = gh[:, layer, head] if head is not None else gn[:, layer, neuron]
        assert got.tolist() == pytest.approx(g, rel=1e-5, abs=1e-9)
        assert float(got.pow(2).sum()) == pytest.approx(fisher, rel=1e-5)


@pytest.mark.e2e
def test_reference_tuning_reduces_the_layer_output_error_against_its_teacher(minilm, qa_batches):
    from methods.pruning.encoder_units import encoder_flops, masks_applied, unit_flops
    from methods.pruning.kwon import minibatch_mask_gradients, search_masks
    from methods.pruning.mask_tuning import tune_like_reference
    model, _ = minilm
    fam = family_of(model.config.model_type)
    cfg, dev = model.config, torch.device("cpu")
    L, H, N = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size
    gh, gn = minibatch_mask_gradients(model, fam, qa_batches, L, H, N, dev, batch_size=8)
    hf, nf = unit_flops(model, 128)
    full = encoder_flops(model, fam, 128)
    student = search_masks(gh.pow(2).sum(0), gn.pow(2).sum(0), hf, nf, 0.5 * full)
    teacher = search_masks(gh.pow(2).sum(0), gn.pow(2).sum(0), hf, nf, 0.5 ** 0.5 * full)
    hm, nm, report = tune_like_reference(model, fam, qa_batches, dev, teacher, student, on_failure="skip")
    assert not report["failures"] and "0.heads" not in report["tuned"] and "1.heads" in report["tuned"]
    assert torch.equal(hm[0], student[0][0]) and not torch.equal(hm[1], student[0][1])   # layer-0 heads untouched

    @torch.no_grad()
    def block_outputs(masks):
        outs = []
        with masks_applied(model, fam, *masks):
            for b in qa_batches:
                hs = model.bert(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                                token_type_ids=b.get("token_type_ids"), output_hidden_states=True).hidden_states
                keep = b["attention_mask"].bool()
                outs.append(torch.stack([h[keep] for h in hs[1:]]))
        return torch.cat(outs, 1)

    target = block_outputs(teacher)
    err_binary = (block_outputs(student) - target).pow(2).sum((1, 2))
    err_tuned = (block_outputs((hm, nm)) - target).pow(2).sum((1, 2))
    assert float(err_tuned.sum()) < 0.8 * float(err_binary.sum())
    assert float(err_tuned[-1]) < float(err_binary[-1])
