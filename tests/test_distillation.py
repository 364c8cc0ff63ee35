"""Distillation: the losses against their definitions, the layer matchings, the student's
initialisation, and that a training step moves the student only."""
from __future__ import annotations

import copy

import pytest
import torch

from methods.core.arch import FAMILIES
from methods.distillation.losses import Objective
from methods.distillation.matching import Matching, buckets, emd_flow, one_to_one, rail_layers
from methods.distillation.student import make_student, student_layers
from methods.distillation.taps import Tapped
from tiny_encoders import batches, tiny_bert

BERT = FAMILIES["bert"]
SOURCES = ["logits", "hidden", "attention", "embeddings", "relations", "mh_relations"]


def features(model, batch, objective, layers):
    return Tapped(model, BERT, objective.qkv_layers(layers, teacher=False))(**batch)


@pytest.mark.parametrize("qa", [False, True])
@pytest.mark.parametrize("source", SOURCES)
def test_each_loss_is_zero_on_the_teacher_itself_and_positive_otherwise(source, qa):
    teacher = tiny_bert(qa=qa)
    batch = batches(1, qa=qa)[0]
    obj = Objective({source: 1.0}, Matching("skip", 4, 4, 32), 32, 32, temperature=2.0, relation_heads=8)
    with torch.no_grad():
        t = features(teacher, batch, obj, 4)
        same, _ = obj(features(teacher, batch, obj, 4), t, batch)
        other = copy.deepcopy(teacher)
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
        diff, _ = obj(features(other, batch, obj, 4), t, batch)
    assert abs(float(same)) < 1e-6, (source, float(same))
    assert float(diff) > 1e-4, (source, float(diff))


def test_attention_maps_match_the_models_own_attention_probabilities():
    model = tiny_bert(dropout=0.0)
    model.config._attn_implementation = "eager"
    batch = batches(1)[0]
    obj = Objective({"attention": 1.0}, Matching("skip", 4, 4, 32), 32, 32)
    with torch.no_grad():
        f = features(model, batch, obj, 4)
        ref = model(**batch, output_attentions=True).attentions
    real = batch["attention_mask"].bool()
    for layer in range(1, 5):
        ours = f.attention_logp(layer).exp()
        torch.testing.assert_close(ours[:, :, :, :][real[:, None, :, None].expand_as(ours) & real[:, None, None, :]],
                                   ref[layer - 1][real[:, None, :, None].expand_as(ours) & real[:, None, None, :]],
                                   atol=1e-5, rtol=1e-4)


def test_logit_kl_equals_its_definition():
    from methods.training.objectives import logit_kl
    s, t = torch.randn(5, 3), torch.randn(5, 3)
    tau = 3.0
    p, q = torch.softmax(t / tau, -1), torch.softmax(s / tau, -1)
    direct = (p * (p.log() - q.log())).sum(-1).mean() * tau ** 2
    torch.testing.assert_close(logit_kl(s, t, tau), direct)


def test_one_to_one_skip_and_last_for_12_to_6_and_6_to_3():
    assert one_to_one(6, 12, "skip") == {1: 2, 2: 4, 3: 6, 4: 8, 5: 10, 6: 12}
    assert one_to_one(6, 12, "last") == {1: 7, 2: 8, 3: 9, 4: 10, 5: 11, 6: 12}
    assert one_to_one(3, 6, "skip") == {1: 2, 2: 4, 3: 6}
    assert one_to_one(3, 6, "last") == {1: 4, 2: 5, 3: 6}


def test_many_to_one_buckets_cover_every_teacher_layer_once():
    assert buckets(6, 12) == {1: [1, 2], 2: [3, 4], 3: [5, 6], 4: [7, 8], 5: [9, 10], 6: [11, 12]}
    assert buckets(3, 6) == {1: [1, 2], 2: [3, 4], 3: [5, 6]}
    assert sorted(j for js in buckets(4, 12).values() for j in js) == list(range(1, 13))


def test_rail_draws_a_sorted_subset_anew_each_epoch_deterministically():
    draws = [rail_layers(6, 12, seed=0, epoch=e) for e in range(5)]
    for d in draws:
        layers = list(d.values())
        assert len(layers) == 6 and layers == sorted(layers) and len(set(layers)) == 6
        assert all(1 <= j <= 12 for j in layers)
    assert len({tuple(d.values()) for d in draws}) > 1
    assert draws[2] == rail_layers(6, 12, seed=0, epoch=2)


def test_emd_flow_is_a_transport_plan_and_follows_the_cheap_diagonal():
    cost = torch.ones(3, 6)
    for i in range(3):
        cost[i, 2 * i:2 * i + 2] = 0.0   # student layer i is cheap to match with teacher layers 2i+1, 2i+2
    flow = emd_flow(cost)
    torch.testing.assert_close(flow.sum(1), torch.full((3,), 1 / 3, dtype=flow.dtype))
    torch.testing.assert_close(flow.sum(0), torch.full((6,), 1 / 6, dtype=flow.dtype))
    assert float((flow * cost).sum()) < 1e-9


def test_student_layers_and_initialisation():
    assert student_layers(12, 6, "every_other") == [0, 2, 4, 6, 8, 10]
    assert student_layers(6, 3, "every_other") == [0, 2, 4]
    assert student_layers(12, 6, "skip") == [1, 3, 5, 7, 9, 11]
    assert student_layers(6, 3, "last") == [3, 4, 5]
    assert student_layers(6, 3, "first") == [0, 1, 2]
    teacher = tiny_bert(layers=6)
    student = make_student(teacher, BERT, [0, 2, 4])
    assert len(BERT.blocks(student)) == 3 and student.config.num_hidden_layers == 3
    for s_block, t_index in zip(BERT.blocks(student), [0, 2, 4]):
        t_block = BERT.blocks(teacher)[t_index]
        for (n, a), (_, b) in zip(s_block.named_parameters(), t_block.named_parameters()):
            assert torch.equal(a, b), n
    assert len(BERT.blocks(teacher)) == 6  # the teacher is untouched


def test_a_distillation_step_moves_the_student_and_never_the_teacher(tmp_path):
    from methods.distillation.distill import _Student
    from methods.training.trainer import TrainConfig, Trainer

    teacher = tiny_bert(layers=4).requires_grad_(False)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = make_student(teacher, BERT, [0, 2])
    s_before = {k: v.clone() for k, v in student.state_dict().items()}
    obj = Objective({"logits": 1.0, "hidden": 1.0, "attention": 1.0}, Matching("skip", 2, 4, 32), 32, 32)
    wrapped = _Student(Tapped(student, BERT, obj.qkv_layers(2, False)), obj)
    t_tapped = Tapped(teacher, BERT, obj.qkv_layers(4, True))
    data = batches(3)
    Trainer(TrainConfig(steps=3, batch_size=4, lr=1e-3, warmup_ratio=0.0), torch.device("cpu"), progress=False).fit(
        wrapped, lambda e: data, lambda s, t, b: obj(s, t, b), teacher=t_tapped)
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in teacher.parameters())
    moved = [k for k, v in student.state_dict().items() if not torch.equal(v, s_before[k])]
    assert len(moved) > len(s_before) // 2
