"""Pruning while training, end to end on the real offline MiniLM and its shipped fine-tuned
teacher (squad_dev_split): the claim comparing movement pruning (MvP) with gradual magnitude
pruning (GMP) at the same rate, schedule, distillation, steps and seed; Table 2 takes the records
beside the reported rows, with preset and training cost.

At 50% and a short budget the comparison goes the way Sanh et al. report for low sparsity
(magnitude ahead of movement; movement wins in the high-sparsity regime, after thousands of
steps of score learning): the movement scores of a 5-step run carry little signal yet."""
from __future__ import annotations

import pytest

from conftest import ENCODER, SEEDED, base_config, require_minilm_teacher, squad_f1

TRAIN = {"train": "cpu_short", "train.batch_size": 8, "train.checkpoint_every": 0}
RATE = 0.5
# the claim's budget, on the plumbing settings (64 examples: the margin is dozens of answers), so
# that at seed 0 Table 2's test reads the claim's own records (its margin checked at seeds 0, 1, 2: docs/tests.md)
STEPS = 5


def _pair(results, settings: dict, steps: int) -> dict:
    require_minilm_teacher()
    from eval.pipeline import run
    return {m: run(base_config(results, method=m, **settings, **TRAIN, **{"train.steps": steps, "method.rate": RATE}))
            for m in ("mvp", "gmp")}


@pytest.mark.claims
def test_movement_and_magnitude_pruning_at_the_same_rate_and_steps(shared_results, record_property):
    from eval.records import RecordStore
    runs = _pair(shared_results, {**ENCODER, **SEEDED}, steps=STEPS)
    mvp, gmp = runs["mvp"], runs["gmp"]
    for r in (mvp, gmp):
        comp = r["compression"]
        assert comp["kind"] == "unstructured" and comp["comp_rate"] == pytest.approx(RATE, abs=1e-3)
        assert r["training"]["steps"] == STEPS and r["training"]["samples"] == 8 * STEPS
    assert mvp["identity"]["train"] == gmp["identity"]["train"]
    assert mvp["compression"]["schedule"] == gmp["compression"]["schedule"]
    # the low-sparsity, short-budget regime: magnitude keeps the fine-tuned model, movement's
    # scores (learned for a few dozen steps) do not yet know which weights matter
    record_property("margin", squad_f1(gmp) - squad_f1(mvp))             # F1 points; must exceed 10
    assert squad_f1(gmp) > squad_f1(mvp) + 10, (squad_f1(gmp), squad_f1(mvp))
    assert squad_f1(gmp) > 0.6 * RecordStore(shared_results).load(gmp["dense_id"])["headline"]


@pytest.mark.e2e
def test_table_2_takes_the_trained_rows_with_preset_and_cost(shared_results):
    from tables.build import TABLES, build_table

    runs = _pair(shared_results, {**ENCODER, **SEEDED}, steps=STEPS)     # the claim's runs: 5 steps reach every stage
    for r in runs.values():
        assert r["compression"]["comp_rate"] == pytest.approx(RATE, abs=1e-3) and r["training"]["steps"] == STEPS
    t2 = build_table(TABLES["table2"], list(runs.values()), include_partial=True)
    rep = t2[t2["source"] == "reported"]
    assert rep[rep["method"] == "MvP"].iloc[0]["preset"] == "mvp"
    mine = t2[t2["source"] == "reproduced"]
    assert set(mine["method"]) == {"MvP", "GMP"}
    row = mine[mine["method"] == "MvP"].iloc[0]
    assert row["squad_dev_split"] == pytest.approx(runs["mvp"]["delta"], abs=0.01) and row["cost"] == "high"
    assert row["train_steps"] == STEPS and row["preset"] == "mvp"
