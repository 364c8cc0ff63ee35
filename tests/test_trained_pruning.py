"""Pruning while training: the schedule, movement scores, oBERT's OBS update, ZipLM's structured
OBS and search, CoFi/SIMPLE gates made physical, token dropping, and every preset on a tiny BERT."""
from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from tiny_encoders import batches, tiny_bert


# ---- the cubic schedule -----------------------------------------------------------------------
def test_cubic_schedule_reaches_the_target_at_its_end_and_is_monotone():
    from methods.pruning.trained.schedule import CubicSchedule
    s = CubicSchedule.over(0.9, steps=100, start_frac=0.1, end_frac=0.7, interval=10)
    values = [s.at(t) for t in range(101)]
    assert values[: s.start] == [0.0] * s.start and s.at(s.start) == 0.0
    assert s.at(s.end) == pytest.approx(0.9) and values[-1] == pytest.approx(0.9)
    assert all(a <= b for a, b in zip(values, values[1:]))
    # Zhu & Gupta: s_t = s_f (1 − (1 − (t − t0)/(n Δt))³), constant between pruning steps
    t = s.start + 2 * s.interval
    assert s.at(t) == pytest.approx(0.9 * (1 - (1 - 2 * s.interval / (s.end - s.start)) ** 3))
    assert s.at(t + 3) == s.at(t) and s.prunes_at(t) and not s.prunes_at(t + 3)
    assert CubicSchedule(0.5, 10, 10).at(10) == 0.5
    with pytest.raises(ValueError, match="initial"):
        CubicSchedule(0.5, 0, 10, initial=0.7)


# ---- movement ---------------------------------------------------------------------------------
def test_hard_movement_scores_are_minus_w_times_the_gradient_accumulated_over_steps():
    from methods.pruning.trained.weight_masks import MaskedLinear
    torch.manual_seed(0)
    lin = nn.Linear(6, 4)
    m = MaskedLinear(lin, mode="fixed", track_movement=True)
    m.mask[0, :3] = False                               # a masked entry accumulates movement too
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    expected = torch.zeros(4, 6)
    for step in range(3):
        x, y = torch.randn(5, 6), torch.randn(5, 4)
        # the direct computation: W′ = W ⊙ M as a leaf, its gradient, times W
        w_eff = (lin.weight.detach() * m.mask).requires_grad_(True)
        loss = ((x @ w_eff.t() + lin.bias.detach() - y) ** 2).mean()
        (g,) = torch.autograd.grad(loss, w_eff)
        expected -= lin.weight.detach() * g
        opt.zero_grad()
        ((m(x) - y) ** 2).mean().backward()
        opt.step()
    torch.testing.assert_close(m.movement, expected)


def test_learned_movement_scores_get_the_straight_through_gradient():
    from methods.pruning.trained.weight_masks import MaskedLinear
    torch.manual_seed(0)
    lin = nn.Linear(6, 4)
    m = MaskedLinear(lin, mode="topk", score_init=0.0)
    m.sparsity = 0.5
    x = torch.randn(5, 6)
    m(x).pow(2).sum().backward()
    w_eff = (lin.weight.detach() * (m.final_keep())).requires_grad_(True)
    (g,) = torch.autograd.grad((x @ w_eff.t() + lin.bias.detach()).pow(2).sum(), w_eff)
    torch.testing.assert_close(m.scores.grad, g * lin.weight.detach())
    assert int(m.final_keep().sum()) == 12


# ---- oBERT ------------------------------------------------------------------------------------
def test_obs_update_with_an_exact_fisher_is_the_constrained_minimum():
    from methods.pruning.trained.obert import fisher_inverse, fisher_inverse_diag, obs_update
    torch.manual_seed(0)
    B, G = 6, 20
    grads = torch.randn(G, 2, B, dtype=torch.float64)
    finv = fisher_inverse(grads, damp=1e-3)
    F = torch.einsum("gni,gnj->nij", grads, grads) / G + 1e-3 * torch.eye(B, dtype=torch.float64)
    torch.testing.assert_close(finv, torch.linalg.inv(F))
    few = grads[:4]                                    # fewer gradients than the block: Woodbury
    F4 = torch.einsum("gni,gnj->nij", few, few) / 4 + 1e-3 * torch.eye(B, dtype=torch.float64)
    torch.testing.assert_close(fisher_inverse(few, 1e-3), torch.linalg.inv(F4))
    torch.testing.assert_close(fisher_inverse_diag(few, 1e-3), torch.linalg.inv(F4).diagonal(dim1=-2, dim2=-1))
    w = torch.randn(2, B, dtype=torch.float64)
    prune = torch.tensor([[True, False, True, False, False, False], [False] * 5 + [True]])
    new = obs_update(w, finv, prune)
    for b in range(2):
        q = prune[b]
        # closed form δw = −F⁻¹[:, Q] (F⁻¹[Q, Q])⁻¹ w_Q
        delta = -finv[b][:, q] @ torch.linalg.solve(finv[b][q][:, q], w[b][q])
        torch.testing.assert_close(new[b], w[b] + delta)
        # and, independently, the minimiser of ½ δwᵀ F δw with δw_Q = −w_Q: δw_free = F_ff⁻¹ F_fQ w_Q
        f = ~q
        free = torch.linalg.solve(F[b][f][:, f], F[b][f][:, q] @ w[b][q])
        torch.testing.assert_close(new[b][f], w[b][f] + free)
        assert torch.all(new[b][q] == 0)


def test_obert_scores_by_w_squared_over_the_fisher_inverse_diagonal():
    """With a Fisher that is diagonal, ρ = w² F_ii / 2: the weights with the smallest such saliency
    go first, not the smallest |w|."""
    from methods.pruning.trained.obert import fisher_inverse
    grads = torch.zeros(4, 1, 2, dtype=torch.float64)
    grads[:, 0, 0] = 10.0      # a large curvature on weight 0
    grads[:, 0, 1] = 0.1
    finv = fisher_inverse(grads, damp=0.0)
    w = torch.tensor([[0.2, 1.0]], dtype=torch.float64)
    rho = w ** 2 / (2 * finv.diagonal(dim1=-2, dim2=-1))
    assert rho[0, 0] > rho[0, 1]   # the smaller weight is the more salient one here


# ---- ZipLM ------------------------------------------------------------------------------------
def test_structured_obs_removal_error_and_update_match_the_direct_least_squares():
    from methods.pruning.trained.ziplm import obs_group_removal, obs_remove
    torch.manual_seed(0)
    X = torch.randn(200, 8, dtype=torch.float64)
    H = X.t() @ X / 200
    W = torch.randn(3, 8, dtype=torch.float64)
    order, errs = obs_group_removal(W, H, group=2, damp=0.0)
    assert sorted(order) == [0, 1, 2, 3] and all(a <= b for a, b in zip(errs, errs[1:]))
    drop = order[:2]
    new = obs_remove(W, H, 2, drop, damp=0.0)
    keep = [c for g in range(4) if g not in drop for c in (2 * g, 2 * g + 1)]
    # the OBS update is the least-squares refit of the kept columns to the dense outputs
    refit = torch.linalg.lstsq(X[:, keep], X @ W.t()).solution.t()
    torch.testing.assert_close(new[:, keep], refit)
    assert torch.all(new[:, [c for c in range(8) if c not in keep]] == 0)
    # the accumulated error is the increase of ‖XWᵀ − X W′ᵀ‖²/n
    err = ((X @ W.t() - X @ new.t()) ** 2).sum() / 200
    assert errs[1] == pytest.approx(float(err), rel=1e-6)


def test_latency_aware_search_is_the_brute_force_optimum():
    from methods.pruning.trained.ziplm import search
    errors = [[5.0, 2.0, 0.5, 0.0], [9.0, 1.0, 0.0], [4.0, 3.0, 0.1, 0.0]]
    latency = [[0.0, 1.0, 2.0, 3.0], [0.0, 2.5, 5.0], [0.0, 0.5, 1.0, 1.5]]
    budget = 5.0
    best = min((ks for ks in itertools.product(*[range(len(e)) for e in errors])
                if sum(lat[k] for lat, k in zip(latency, ks)) <= budget),
               key=lambda ks: sum(e[k] for e, k in zip(errors, ks)))
    assert tuple(search(errors, latency, budget)) == best


# ---- CoFi / SIMPLE gates -----------------------------------------------------------------------
def _set_gates(gates, seed=1):
    torch.manual_seed(seed)
    with torch.no_grad():
        for g in (gates.head, gates.int, gates.mha, gates.ffn, gates.hid):
            if g is not None:
                g.log_alpha.copy_(torch.randn_like(g.log_alpha) * 3)
    gates.eval()


def test_cofi_gates_made_physical_remove_the_expected_parameters_and_keep_the_outputs():
    from methods.core.arch import FAMILIES
    from methods.pruning.trained.gates import StructureGates
    from methods.pruning.trained.structured import block_params
    fam = FAMILIES["bert"]
    model = tiny_bert(dropout=0.0, qa=True)
    gates = StructureGates(model, fam)
    _set_gates(gates)
    # CoFi's test-time masks keep the expected number of structures: the expected size is the size
    z = gates.sample()
    expected_blocks = float(gates.expected_params(False).detach())
    b = {k: v for k, v in batches(1, qa=True)[0].items() if "positions" not in k}
    with torch.no_grad(), gates.applied(model, z):
        masked = model(**b)
    facts = gates.make_physical(model)
    with torch.no_grad():
        physical = model(**b)
    torch.testing.assert_close(physical.start_logits, masked.start_logits, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(physical.end_logits, masked.end_logits, atol=1e-5, rtol=1e-4)
    d = facts["hidden_kept"]
    heads, neurons = sum(facts["heads_kept"]), sum(facts["neurons_kept"])
    assert d == int((z["hid"] > 0).sum()) < 32
    # weights left in the blocks: 4·d·hd per head and 2·d per neuron (plus biases)
    weights = sum(layer.weight.numel() for blk in fam.blocks(model) for layer in fam.linears(blk).values())
    assert weights == d * (4 * 8 * heads + 2 * neurons)
    assert weights == pytest.approx(expected_blocks, rel=0.15)
    assert block_params(model, fam) < 4 * (4 * 32 * 32 + 2 * 32 * 64)


def test_gate_shift_reaches_the_target_sparsity_and_keeps_the_order():
    from methods.core.arch import FAMILIES
    from methods.pruning.trained.gates import StructureGates
    gates = StructureGates(tiny_bert(dropout=0.0, qa=True), FAMILIES["bert"])
    _set_gates(gates)
    dense = gates.dense_params(False)
    before = float(1 - gates.expected_params(False).detach() / dense)
    order = gates.int.log_alpha.detach().argsort()
    delta = gates.shift_to(min(0.95, before + 0.2), False)
    after = float(1 - gates.expected_params(False).detach() / dense)
    assert delta > 0 and after == pytest.approx(min(0.95, before + 0.2), abs=1e-3)
    assert torch.equal(gates.int.log_alpha.detach().argsort(), order)
    assert gates.shift_to(after - 0.1, False) == 0.0   # already sparse enough: untouched


def test_simple_gates_on_a_llama_block_made_physical_keep_the_outputs(tiny):
    import copy
    from methods.pruning.trained.gates import StructureGates
    model = copy.deepcopy(tiny.model).float()
    gates = StructureGates(model, tiny.family, layers=False)
    _set_gates(gates, seed=2)
    ids = torch.randint(0, 4000, (2, 16))
    with torch.no_grad(), gates.applied(model, gates.sample()):
        masked = model(input_ids=ids).logits
    facts = gates.make_physical(model)
    with torch.no_grad():
        physical = model(input_ids=ids).logits
    assert facts["hidden_kept"] < 256
    assert model.get_input_embeddings().weight.shape[1] == facts["hidden_kept"]
    torch.testing.assert_close(physical, masked, atol=1e-4, rtol=1e-4)


# ---- token dropping ---------------------------------------------------------------------------
def _token_model(policy):
    from methods.pruning.trained.token_drop import install
    model = tiny_bert(dropout=0.0, qa=True)
    enc = install(model, policy)
    enc.hard = True
    return model, enc


def test_keeping_every_token_is_the_dense_model():
    from methods.pruning.trained.token_drop import TokenPolicy

    class KeepAll(TokenPolicy):
        def keep(self, layer, sig, alive):
            return alive.clone()
    dense = tiny_bert(dropout=0.0, qa=True)
    model, _ = _token_model(KeepAll())
    b = {k: v for k, v in batches(1, qa=True)[0].items() if "positions" not in k}
    with torch.no_grad():
        a, c = dense(**b), model(**b)
    keep = b["attention_mask"].bool()
    torch.testing.assert_close(c.start_logits[keep], a.start_logits[keep], atol=1e-5, rtol=1e-4)


def test_power_bert_keeps_cls_and_the_configured_number_of_tokens():
    from methods.pruning.trained.power_bert import Retention
    policy = Retention(4, 12)
    policy.retention = [8, 5, 3, 1]
    model, enc = _token_model(policy)
    b = {k: v for k, v in batches(1, qa=True)[0].items() if "positions" not in k}
    kept = []
    orig = policy.keep

    def spy(layer, sig, alive):
        k = orig(layer, sig, alive)
        kept.append(k)
        return k
    policy.keep = spy
    with torch.no_grad():
        model(**b)
    real = b["attention_mask"].sum(1)
    assert [t.tolist() for t in enc.tokens_per_layer] == [real.tolist(), [8] * 4, [5] * 4, [3] * 4]
    assert all(bool(k[:, 0].all()) for k in kept)          # [CLS] is always position 0 and kept


def test_ltp_drops_the_tokens_under_its_threshold_and_keeps_cls():
    from methods.pruning.trained.ltp import Thresholds
    policy = Thresholds(4, heads=4, temperature=0.1, lr_scale=1.0)
    with torch.no_grad():
        policy.theta.copy_(torch.tensor([1e9, 1e9, 1e9, 1e9]))   # every token but [CLS] under the threshold
    model, enc = _token_model(policy)
    b = {k: v for k, v in batches(1, qa=True)[0].items() if "positions" not in k}
    with torch.no_grad():
        model(**b)
    assert [t.tolist() for t in enc.tokens_per_layer[1:]] == [[1] * 4] * 3
    with torch.no_grad():
        policy.theta.fill_(-1.0)                                 # none under it: nothing dropped
        model(**b)
    assert [t.tolist() for t in enc.tokens_per_layer] == [b["attention_mask"].sum(1).tolist()] * 4


# ---- every method through the shared trainer on a tiny BERT ------------------------------------
@pytest.mark.parametrize("name,kw,rate", [
    ("movement", {"rate": 0.8, "interval": 2}, 0.8), ("movement", {"rate": 0.8, "hard_movement": True}, 0.8),
    ("obert", {"rate": 0.8, "fisher_batches": 2, "block_size": 16}, 0.8),
    ("obert", {"rate": 0.8, "score": "magnitude"}, 0.8), ("leap", {"rate": 0.8}, 0.8),
    ("cap", {"rate": 0.8}, 0.8), ("cap_structured", {"rate": 0.5}, 0.5), ("bmp", {"rate": 0.5}, 0.5),
    ("snip", {"rate": 0.5}, 0.5), ("dynabert", {"rate": 0.5, "widths": [1.0, 0.5]}, 0.5),
    ("top_drop_ft", {"rate": 0.5}, 0.5), ("cofi", {"rate": 0.5}, None), ("ebert", {"rate": 0.5}, None),
    ("ziplm", {"speedup": 2.0}, None), ("power_bert", {"rate": 0.5}, None), ("ltp", {"rate": 0.5}, None),
])
def test_trained_pruners_run_through_the_trainer_and_report_their_rate(name, kw, rate):
    from methods.core.arch import FAMILIES
    from methods.core.base import TrainingInputs, build
    from methods.core.model_facts import measure
    from methods.training.trainer import TrainConfig, Trainer
    fam = FAMILIES["bert"]
    teacher = tiny_bert(dropout=0.0, qa=True).requires_grad_(False)
    model = tiny_bert(dropout=0.0, qa=True)
    data = batches(3, qa=True)
    trainer = Trainer(TrainConfig(steps=10, batch_size=4, lr=1e-3, warmup_ratio=0.0), torch.device("cpu"),
                      progress=False)
    method = build(name, **{"interval": 2, **kw} if name in ("movement", "obert", "leap", "cap", "cap_structured",
                                                             "bmp", "snip") else kw)
    before = measure(model, fam)
    out = method.compress_trained(model, fam, TrainingInputs(trainer, lambda e: data, teacher,
                                                             pretrained=lambda: tiny_bert(qa=True, seed=1)),
                                  torch.device("cpu"))
    rec = method.result(before, measure(out, fam)).to_record(32)
    if rate is not None:
        assert rec["comp_rate"] == pytest.approx(rate, abs=0.03)
    assert 0 <= rec["comp_rate"] <= 1
    b = {k: v for k, v in data[0].items() if "positions" not in k}
    with torch.no_grad():
        assert torch.isfinite(out(**b).start_logits).all()
    if method.physical and not method.dynamic_speedup and rec["kind"] == "structured":
        assert rec["params_after"] < rec["params_before"]


def _tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(cfg).eval()


def test_gpt2_unfused_is_the_same_model_and_its_gates_made_physical_keep_the_outputs():
    from methods.core.arch import FAMILIES
    from methods.pruning.structure import unfuse_gpt2
    from methods.pruning.trained.gates import StructureGates
    fam = FAMILIES["gpt2"]
    model = _tiny_gpt2()
    ids = torch.randint(0, 100, (2, 16))
    with torch.no_grad():
        dense = model(input_ids=ids).logits
    unfuse_gpt2(model, fam)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, dense, atol=1e-5, rtol=1e-5)
    gates = StructureGates(model, fam, layers=False)
    _set_gates(gates, seed=3)
    with torch.no_grad(), gates.applied(model, gates.sample()):
        masked = model(input_ids=ids).logits
    facts = gates.make_physical(model)
    with torch.no_grad():
        physical = model(input_ids=ids).logits
    assert facts["hidden_kept"] < 32 and sum(facts["heads_kept"]) < 8
    assert model.transformer.wte.weight.shape[1] == facts["hidden_kept"]
    torch.testing.assert_close(physical, masked, atol=1e-4, rtol=1e-4)


def test_ziplm_prunes_gpt2_heads_and_neurons_to_a_smaller_model():
    from methods.core.arch import FAMILIES
    from methods.core.base import TrainingInputs, build
    from methods.training.trainer import TrainConfig, Trainer
    fam = FAMILIES["gpt2"]
    teacher, model = _tiny_gpt2().requires_grad_(False), _tiny_gpt2()
    ids = torch.randint(0, 100, (4, 16))
    data = [{"input_ids": ids, "labels": ids}] * 2
    trainer = Trainer(TrainConfig(steps=4, batch_size=4, lr=1e-3, warmup_ratio=0.0), torch.device("cpu"),
                      progress=False)
    method = build("ziplm", speedup=2.0, tables=["table3"])
    params = sum(p.numel() for p in model.parameters())
    out = method.compress_trained(model, fam, TrainingInputs(trainer, lambda e: data, teacher), torch.device("cpu"))
    assert sum(p.numel() for p in out.parameters()) < params
    assert method.facts["block_params_after"] < method.facts["block_params_before"]
    with torch.no_grad():
        assert torch.isfinite(out(input_ids=ids).logits).all()
