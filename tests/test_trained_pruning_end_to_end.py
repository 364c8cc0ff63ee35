"""Pruning while training, end to end on the real offline MiniLM and its shipped fine-tuned
teacher (squad_dev_split), CI-sized: movement pruning (MvP) against gradual magnitude pruning
(GMP) at the same rate, schedule, distillation, steps and seed; Table 2 takes the records beside
the reported rows, with preset and training cost.

At 50% and a short budget the comparison goes the way Sanh et al. report for low sparsity
(magnitude ahead of movement; movement wins in the high-sparsity regime, after thousands of
steps of score learning): the movement scores of a 60-step run carry little signal yet."""
from __future__ import annotations

import pytest

from conftest import MINILM_TEACHER, require_minilm_teacher, squad_f1

pytestmark = pytest.mark.slow

TEACHER = MINILM_TEACHER
SETTINGS = {"model": "minilm", "task": "squad_dev_split", "model.finetuned": str(TEACHER), "task.max_length": 128,
            "task.doc_stride": 64, "task.max_eval_examples": 200, "train": "cpu_short", "train.steps": 60,
            "train.batch_size": 8, "train.checkpoint_every": 0}
RATE = 0.5


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    require_minilm_teacher()
    from conftest import base_config
    from eval.pipeline import run

    results = tmp_path_factory.mktemp("trained_pruning") / "results"
    out = {m: run(base_config(results, method=m, **SETTINGS, **{"method.rate": RATE})) for m in ("mvp", "gmp")}
    out["dense"] = run(base_config(results, method="dense", **{k: v for k, v in SETTINGS.items()
                                                                if not k.startswith("train")}))
    out["results"] = results
    return out


def test_movement_and_magnitude_pruning_at_the_same_rate_and_steps(runs):
    mvp, gmp = runs["mvp"], runs["gmp"]
    for r in (mvp, gmp):
        comp = r["compression"]
        assert comp["kind"] == "unstructured" and comp["comp_rate"] == pytest.approx(RATE, abs=1e-3)
        assert r["training"]["steps"] == 60 and r["training"]["samples"] == 480
    assert mvp["identity"]["train"] == gmp["identity"]["train"]
    assert mvp["compression"]["schedule"] == gmp["compression"]["schedule"]
    # the low-sparsity, short-budget regime: magnitude keeps the fine-tuned model, movement's
    # scores (learned for a few dozen steps) do not yet know which weights matter
    assert squad_f1(gmp) > squad_f1(mvp) + 10, (squad_f1(gmp), squad_f1(mvp))
    assert squad_f1(gmp) > 0.6 * runs["dense"]["headline"]


def test_table_2_takes_the_trained_rows_with_preset_and_cost(runs):
    from eval.records import RecordStore
    from tables.build import TABLES, build_table

    t2 = build_table(TABLES["table2"], list(RecordStore(runs["results"])))
    rep = t2[t2["source"] == "reported"]
    assert rep[rep["method"] == "MvP"].iloc[0]["preset"] == "mvp"
    mine = t2[t2["source"] == "reproduced"]
    assert set(mine["method"]) == {"MvP", "GMP"}
    row = mine[mine["method"] == "MvP"].iloc[0]
    assert row["squad"] == pytest.approx(runs["mvp"]["delta"], abs=0.01) and row["cost"] == "high"
    assert row["train_steps"] == 60 and row["preset"] == "mvp"
