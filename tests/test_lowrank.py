"""Low-rank factorisation against Eckart–Young, FWSVD against SVD, and LoRA/AdaLoRA's merge and
adaptor-size rate against direct computations."""
from __future__ import annotations

import pytest
import torch

from methods.lowrank.factorized import FactorizedLinear, factorize, rank_for_rate, svd_factors
from tiny_encoders import batches, tiny_bert


def weight(out=48, inp=32, seed=0):
    return torch.randn(out, inp, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_full_rank_svd_reproduces_the_weight():
    w = weight()
    a, b = svd_factors(w, 32)
    torch.testing.assert_close(b @ a, w)


@pytest.mark.parametrize("k", [1, 5, 17])
def test_rank_k_error_is_the_norm_of_the_tail_singular_values(k):
    w = weight()
    a, b = svd_factors(w, k)
    s = torch.linalg.svdvals(w)
    torch.testing.assert_close(torch.linalg.norm(w - b @ a), s[k:].pow(2).sum().sqrt())


def test_fwsvd_with_uniform_fisher_is_svd_and_weights_the_error_where_fisher_is_large():
    w = weight()
    a0, b0 = svd_factors(w, 8)
    a1, b1 = svd_factors(w, 8, torch.full((48,), 3.0, dtype=torch.float64))
    torch.testing.assert_close(b1 @ a1, b0 @ a0)
    d = torch.ones(48, dtype=torch.float64)
    d[:8] = 20.0  # the first rows matter most
    a2, b2 = svd_factors(w, 8, d)

    def weighted_err(x):
        return torch.linalg.norm(d[:, None] * (w - x))
    assert weighted_err(b2 @ a2) < weighted_err(b0 @ a0)
    # and it is the optimum of the weighted problem: the tail of diag(d)·W's singular values
    torch.testing.assert_close(weighted_err(b2 @ a2), torch.linalg.svdvals(d[:, None] * w)[8:].pow(2).sum().sqrt())


def test_factorized_linear_computes_b_a_x_plus_bias_and_is_smaller():
    lin = torch.nn.Linear(32, 48).double()
    k = rank_for_rate(48, 32, 0.5)
    assert k * (48 + 32) <= 0.5 * 48 * 32 < (k + 1) * (48 + 32)
    fac = factorize(lin, k)
    x = torch.randn(5, 32, dtype=torch.float64)
    a, b = svd_factors(lin.weight.data, k)
    torch.testing.assert_close(fac(x), x @ (b @ a).t() + lin.bias)
    assert isinstance(fac, FactorizedLinear) and sum(p.numel() for p in fac.parameters()) < lin.weight.numel()
    with pytest.raises(ValueError, match="leaves no rank"):
        rank_for_rate(48, 32, 0.999)


def _peft(method, model):
    from peft import get_peft_model
    from methods.core.arch import FAMILIES
    return get_peft_model(model, method.peft_config(model, FAMILIES["bert"], total_steps=20))


def test_merged_lora_gives_the_unmerged_outputs_and_its_rate_is_a_direct_count():
    from methods.adaptors.peft_adaptors import LoRA, lora_params
    method = LoRA(r=4, alpha=8, dropout=0.0)
    base = tiny_bert(dropout=0.0)
    params = sum(p.numel() for p in base.parameters())
    model = _peft(method, base)
    with torch.no_grad():  # B starts at zero: give the adaptors something to merge
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    batch = {k: v for k, v in batches(1)[0].items() if k != "labels"}
    with torch.no_grad():
        unmerged = model(**batch).logits
    # 4 layers x (query, value) x r x (in + out)
    assert lora_params(model) == 4 * 2 * 4 * (32 + 32)
    merged = model.merge_and_unload()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, unmerged, atol=1e-5, rtol=1e-5)
    method.adaptor_params = 4 * 2 * 4 * 64
    from methods.core.model_facts import ModelSize
    size = ModelSize(params, 0, 0, 0, ())
    assert method.result(size, size).rates(32)["comp_rate"] == pytest.approx(512 * 4 / params)


def test_adalora_counts_only_the_ranks_its_budget_keeps():
    from methods.adaptors.peft_adaptors import AdaLoRA, adalora_params
    model = _peft(AdaLoRA(r=2, init_r=4, dropout=0.0), tiny_bert(dropout=0.0))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_E" in n:
                p.fill_(1.0)
                p[:1] = 0.0   # one of the four ranks pruned in every matrix
    assert adalora_params(model) == 4 * 2 * 3 * (32 + 32 + 1)


def _encoder(kind: str):
    from transformers import (DebertaV2Config, DebertaV2ForSequenceClassification, RobertaConfig,
                              RobertaForSequenceClassification)
    torch.manual_seed(0)
    common = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                  max_position_embeddings=64, num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    if kind == "roberta":
        return RobertaForSequenceClassification(RobertaConfig(**common, pad_token_id=1)).eval()
    return DebertaV2ForSequenceClassification(DebertaV2Config(**common, relative_attention=True,
                                                              pos_att_type=["p2c", "c2p"])).eval()


@pytest.mark.parametrize("kind", ["roberta", "deberta"])
def test_encoder_families_take_svd_and_lora(kind):
    """Table 7's PLMs: RoBERTa (the BERT family's layout) and DeBERTa-v2/v3 (its own family)."""
    from methods.adaptors.peft_adaptors import LoRA, lora_params
    from methods.core.arch import family_of
    from methods.core.base import TrainingInputs
    from methods.lowrank.svd import LowRankSVD

    model = _encoder(kind)
    family = family_of(model.config.model_type)
    assert family.name == ("bert" if kind == "roberta" else "deberta_v2")
    blocks = family.blocks(model)
    assert len(blocks) == 2 and len(family.linears(blocks[0])) == 6
    batch = {k: v for k, v in batches(1)[0].items() if k != "labels"}
    with torch.no_grad():
        dense = model(**batch).logits
    peft_model = LoRA(r=2).peft_config(model, family, 10)
    assert set(peft_model.target_modules) <= {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    method = LowRankSVD(rate=0.01, finetune="none")  # rank 15 of 32x32: nearly exact
    model = method.compress_trained(model, family, TrainingInputs(None, lambda e: [], None), torch.device("cpu"))
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, dense, atol=5e-2, rtol=0)
    assert method.factor_params < method.dense_params
    from peft import get_peft_model
    lora = get_peft_model(_encoder(kind), LoRA(r=2).peft_config(_encoder(kind), family, 10))
    assert lora_params(lora) == 2 * 2 * 2 * (32 + 32)


def test_hard_concrete_gates():
    from methods.core.hard_concrete import HardConcrete
    g = HardConcrete(6)
    with torch.no_grad():
        g.log_alpha.copy_(torch.tensor([-8.0, -2.0, 0.0, 2.0, 4.0, 8.0]))
    p = g.prob_nonzero()
    assert torch.all((p > 0) & (p < 1)) and torch.all(p[1:] > p[:-1])
    g.eval()
    z = g()
    assert z[0] == 0 and z[-1] == 1 and torch.equal(z, g.deterministic())
    g.train()
    samples = torch.stack([g() for _ in range(2000)])
    assert samples.min() >= 0 and samples.max() <= 1
    torch.testing.assert_close((samples > 0).float().mean(0), p.detach(), atol=0.04, rtol=0)  # P(z > 0)


def test_flop_trains_gates_and_meets_the_rate_exactly():
    from methods.core.arch import FAMILIES
    from methods.core.base import TrainingInputs
    from methods.lowrank.factorized import FactorizedLinear
    from methods.lowrank.flop import FLOP
    from methods.training.trainer import TrainConfig, Trainer

    teacher = tiny_bert(dropout=0.0).requires_grad_(False)
    model = tiny_bert(dropout=0.0)
    data = batches(3)
    trainer = Trainer(TrainConfig(steps=6, batch_size=4, lr=1e-3, warmup_ratio=0.0), torch.device("cpu"),
                      progress=False)
    method = FLOP(rate=0.6)
    out = method.compress_trained(model, FAMILIES["bert"], TrainingInputs(trainer, lambda e: data, teacher),
                                  torch.device("cpu"))
    linears = [lin for b in FAMILIES["bert"].blocks(out) for lin in FAMILIES["bert"].linears(b).values()]
    assert all(isinstance(lin, FactorizedLinear) for lin in linears)
    kept = sum(lin.first.weight.numel() + lin.second.weight.numel() for lin in linears)
    assert kept == method.factor_params <= 0.4 * method.dense_params
    assert method.result(None, None).comp_rate >= 0.6 and method.expected_sparsity_end is not None
    with torch.no_grad():
        assert torch.isfinite(out(**{k: v for k, v in data[0].items() if k != "labels"}).logits).all()
