"""The encoder path end to end on the real MiniLM (BERT architecture), offline variant
`squad_dev_split`, on the shipped fine-tuned teacher and the shared plumbing settings
(conftest.ENCODER): int8 post-training quantization, Kwon et al.'s 50% FLOPs mask against random
masks of the same FLOPs, and the records in Tables 2 and 4. The fine-tune cache is tested on a
tiny BERT in test_finetune_cache.py.

The int8 PTQ checked against the 3-F1 bound is W8A8 with token-wise clipped static activation
ranges (`outlier_suppression` at 8 bits, its coarse clipping stage) on the teacher, scored on the
claims' 200 examples (conftest.ENCODER_CLAIMS), calibrated on the plumbing settings' 16 features.
Its F1 depends on the CPU's kernels, not only on the thread count: activation ranges that differ
by 1e-7 (relative) move codes at a rounding boundary, and each answer that flips moves F1 by up to
0.5. Against the teacher's 58.89 (1 thread): 57.52 with AVX-512, 57.80 with AVX2, 56.65 without
SIMD (ATEN_CPU_CAPABILITY=avx512|avx2|default), and 56.73 on a CI machine; on 32 features 58.67
(AVX-512) and 57.25 (AVX2). So the loss is 1.1-2.2 F1, and the bound is 3: this MiniLM's
activations have strong outliers (Q8BERT's plain abs-max ranges lose 2-3.6 F1 in the published
records, results/minilm-l6/README.md), and a wrong range, scale or zero point loses tens of
points. Its LSQ+ stage (`learn_epochs`) on 32 features is not stable at 8 bits (3 epochs lose
2.25 F1 with 1 thread and less than 1 with 2), so the bound is checked without it (LSQ+ itself:
test_encoder_methods.py)."""
from __future__ import annotations

import random

import pandas as pd
import pytest
import torch

from conftest import CLAIMS_NUMERICS, ENCODER, ENCODER_CLAIMS, base_config, require_minilm_teacher

pytestmark = pytest.mark.e2e

# the claims' numerics: the baseline at 200 examples is the distillation claim's
OS8 = {**ENCODER_CLAIMS, **CLAIMS_NUMERICS, "method.wbits": 8, "method.abits": 8, "method.learn_epochs": 0}


@pytest.fixture(scope="module")
def runs(shared_results):
    require_minilm_teacher()
    from eval.pipeline import run
    from eval.records import RecordStore

    # Kwon first: the claims' baseline that OS8 needs is the distillation claim's too, and a worker
    # on that module computes it meanwhile (the other would wait on its lock)
    kw = run(base_config(shared_results, method="kwon", **ENCODER, **{"method.flops_rate": 0.5}))
    q8 = run(base_config(shared_results, method="outlier_suppression", **OS8))
    dense = RecordStore(shared_results).load(kw["dense_id"])
    return dense, q8, kw, base_config(shared_results, **ENCODER)


def f1(record) -> float:
    return record["metrics"]["squad_dev_split"]["headline"]


def random_span_f1(examples, seed: int = 0) -> float:
    """Chance level: a random span of one to three words of the context."""
    from eval.squad import evaluate
    rng = random.Random(seed)
    preds = {}
    for ex in examples:
        words = ex.context.split()
        i = rng.randrange(len(words))
        preds[ex.id] = " ".join(words[i:i + rng.randint(1, 3)])
    return evaluate(examples, preds)["f1"]


def test_finetuned_baseline_is_far_above_chance(runs):
    from eval.tasks.base import build_task
    dense, _, _, cfg = runs
    examples = build_task(cfg).eval_sets()["dev_half"]
    chance = random_span_f1(examples)
    assert dense["metrics"]["squad_dev_split"]["dev_half"]["examples"] == 64
    assert dense["baseline"].endswith("minilm-l6-squad-dev-split")      # the shipped teacher, not a fine-tune
    assert f1(dense) > max(40.0, 3 * chance), (f1(dense), chance)       # the teacher: ~52 F1, chance ~5


def test_int8_post_training_quantization_is_within_three_f1(runs):
    """W8A8: per-channel int8 weights, static per-tensor int8 activations (token-wise clipping)."""
    from eval.records import RecordStore
    _, q8, _, cfg = runs
    dense = RecordStore(cfg["paths"]["results"]).load(q8["dense_id"])       # the claims' baseline
    assert dense["metrics"]["squad_dev_split"]["dev_half"]["examples"] == 200
    assert abs(f1(q8) - f1(dense)) < 3.0, (f1(q8), f1(dense))
    assert q8["delta"] == pytest.approx(f1(q8) - f1(dense))


def test_kwon_half_flops_mask_beats_random_masks_of_the_same_flops(runs):
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from eval.tasks.base import build_task
    from methods.core.arch import family_of
    from methods.pruning.encoder_units import encoder_flops, prune_with_masks

    dense, _, kw, cfg = runs
    comp = kw["compression"]
    assert comp["rate_basis"] == "flops" and comp["kind"] == "structured" and 0.5 <= comp["comp_rate"] < 0.55
    assert comp["params_after"] < comp["params_before"]
    task = build_task(cfg)
    examples = task.eval_sets()["dev_half"]
    tok = AutoTokenizer.from_pretrained(kw["baseline"])
    heads, neurons = sum(comp["heads_kept"]), sum(comp["neurons_kept"])
    random_f1 = []
    for seed in (1, 2):
        model = AutoModelForQuestionAnswering.from_pretrained(kw["baseline"]).eval()
        fam = family_of(model.config.model_type)
        L, H, N = model.config.num_hidden_layers, model.config.num_attention_heads, model.config.intermediate_size
        g = torch.Generator().manual_seed(seed)
        hm, nm = torch.zeros(L * H), torch.zeros(L * N)
        hm[torch.randperm(L * H, generator=g)[:heads]] = 1
        nm[torch.randperm(L * N, generator=g)[:neurons]] = 1
        prune_with_masks(model, fam, hm.view(L, H), nm.view(L, N))
        assert encoder_flops(model, fam, comp["seq_len_for_flops"]) == comp["flops_after"]  # same FLOPs
        random_f1.append(task.score(model, tok, examples, torch.device("cpu"))["f1"])
    assert f1(dense) - f1(kw) < f1(dense) - max(random_f1), (f1(kw), random_f1, f1(dense))


def test_records_share_one_baseline_and_fill_tables_2_and_4(runs):
    from eval.records import RecordStore
    import pandas as pd

    from tables.build import TABLES, build_table
    dense, q8, kw, cfg = runs
    records = [r for r in RecordStore(cfg["paths"]["results"]) if r["id"] in {dense["id"], q8["id"], kw["id"]}]
    assert kw["dense_id"] == dense["id"]                                    # the plumbing settings' one baseline
    assert dense["kind"] == "dense" and kw["config"]["model"]["finetuned"] == kw["baseline"]
    assert q8["baseline"] == kw["baseline"] == dense["baseline"]             # the teacher, not a fine-tune
    assert q8["compression"]["comp_rate"] == pytest.approx(0.75, abs=0.01)  # 8 of 32 bits (+ scales)
    assert kw["config"]["calib"]["nsamples"] == q8["config"]["calib"]["nsamples"] == 16   # on record
    t2 = build_table(TABLES["table2"], records, include_partial=True)
    row = t2[t2["source"] == "reproduced"].iloc[0]
    assert row["method"] == "Kwon et al." and row["rate_basis"] == "flops" and row["granularity"] == "N,H"
    assert pd.isna(row["squad"]) and row["squad_dev_split"] == pytest.approx(round(kw["delta"], 2))   # the variant's own column
    assert row["speedup"] > 0 and row["speedup"] == round(kw["speedup"]["median"], 2)  # measured, same process
    assert kw["timing"]["dense_forward_s"] > 0 and kw["timing"]["forward_s"] > 0
    t4 = build_table(TABLES["table4"], records, include_partial=True)
    row = t4[t4["source"] == "reproduced"].iloc[0]
    assert row["method"] == "Outlier Suppression" and row["squad_dev_split"] == pytest.approx(round(q8["delta"], 2))
    assert pd.isna(row["speedup"])  # fake-quantized weights are never timed; no kernel figures were given
