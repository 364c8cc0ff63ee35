"""Bad input fails before any work with one clear message; records carry their provenance."""
from __future__ import annotations

import json

import pytest
import torch

from eval.data import DataMissing
from eval.records import RecordStore
from eval.pipeline import ConfigError, plan, run


@pytest.mark.parametrize("over, message", [
    ({"method.name": "prunemagic"}, r"unknown method 'prunemagic'; available: .*sparsegpt.*wanda"),
    ({"method": "wanda", "method.sparsity": 1.0},
     r"^method.sparsity=1.0 is out of range: it must be a number >= 0 and < 1$"),
    ({"method": "wanda", "method.sparsity": "'4:2'"}, r"0 < N < M"),
    ({"method": "sparsegpt", "method.sparsity": "'1:3'"}, r"not divisible by M=3"),
    ({"eval.datasets": "[ptb]"}, r"unknown evaluation dataset 'ptb'; known: wikitext2, c4"),
    ({"method": "wanda", "calib.source": "books"}, r"calib.source='books' is out of range: it must be one of c4, "),
    ({"model.dtype": "float8"}, r"model.dtype='float8' is out of range: it must be one of float32, float16, bfloat16"),
    ({"model.path": "/nonexistent/model"}, r"neither a local folder nor reachable"),
    ({"method": "owl_wanda", "method.sparsity": "'2:4'"}, r"N:M is not supported"),
])
def test_bad_input_gets_one_clear_error(make_config, over, message):
    with pytest.raises(ConfigError, match=message):
        plan(make_config(**over))


def test_unknown_model_family_is_refused(make_config, tmp_path):
    folder = tmp_path / "t5"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "t5", "architectures": ["T5Model"]}))
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(1)}, str(folder / "model.safetensors"))   # whole weights: the family is refused
    with pytest.raises(ConfigError, match=r"model_type 't5' is not a family the engine knows \(.*llama"):
        plan(make_config(**{"model.path": str(folder)}))


def test_missing_data_offline_names_the_file(make_config, tmp_path):
    cfg = make_config(**{"paths.data_root": str(tmp_path / "empty"), "eval.max_windows": 2})
    with pytest.raises(DataMissing, match=r"wiki\.test\.raw"):
        run(cfg)


def test_identity_separates_what_changes_numbers(make_config):
    a = plan(make_config(method="wanda"))
    assert a.rid != plan(make_config(method="wanda", seed=1)).rid
    assert a.rid != plan(make_config(method="wanda", **{"calib.nsamples": 64})).rid
    assert a.rid == plan(make_config(method="wanda", progress="true")).rid
    # the dense baseline does not depend on the method, its calibration or the seed
    assert a.dense_rid == plan(make_config(method="sparsegpt", seed=3)).dense_rid
    assert "calib" not in plan(make_config(method="magnitude")).identity


@pytest.mark.e2e
def test_run_records_config_versions_hardware_and_reuses_dense(make_config):
    cfg = make_config(method="wanda", **{"eval.max_windows": 3, "calib.nsamples": 8})
    rec = run(cfg)
    store = RecordStore(cfg["paths"]["results"])
    assert store.exists(rec["id"]) and store.exists(rec["dense_id"])
    assert rec["config"]["method"] == {"name": "wanda", "preset": "wanda", "sparsity": 0.5}
    assert rec["identity"]["method"] == {"name": "wanda", "version": 1, "settings": {"sparsity": 0.5}}
    assert rec["preset"] == "wanda" and rec["rows"]["table3"]["label"] == "Wanda"
    assert rec["protocol"]["partial"] == ["eval.max_windows=3", "calib.nsamples=8 < 128"]
    assert rec["seed"] == 0 and rec["versions"]["torch"] and rec["hardware"]["device"] == "cpu"
    assert rec["timing"]["compress_s"] > 0 and rec["memory"]["compress"]["peak_rss_bytes"] > 0
    t = rec["timing"]  # each phase under its own name; compress_s is the whole compression phase
    assert t["compress_s"] >= t["capture_s"] + t["plan_s"] + t["blocks_s"] and t["total_s"] > t["compress_s"]
    assert rec["compression"]["kind"] == "unstructured" and rec["role"] == "decoder" and rec["task"] == "lm"
    assert rec["compression"]["linear_sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert 0 < rec["compression"]["model_sparsity"] < rec["compression"]["linear_sparsity"]
    dense_mtime = store.path(rec["dense_id"]).stat().st_mtime_ns
    again = run(make_config(method="magnitude", **{"eval.max_windows": 3}))
    assert again["dense_id"] == rec["dense_id"]
    assert store.path(rec["dense_id"]).stat().st_mtime_ns == dense_mtime  # evaluated once
    assert run(cfg)["created"] == rec["created"]  # existing record: skipped, not redone


@pytest.mark.e2e
def test_owl_allocates_layerwise_sparsity_with_the_target_mean(make_config):
    rec = run(make_config(method="owl_wanda", **{"method.sparsity": 0.7, "eval.max_windows": 2,
                                                "calib.nsamples": 8}))
    comp = rec["compression"]
    targets = comp["sparsity_per_block_target"]
    assert sum(targets) / len(targets) == pytest.approx(0.7)
    assert max(targets) - min(targets) == pytest.approx(0.16)
    # the block with the largest outlier ratio is pruned least
    assert targets.index(min(targets)) == comp["outlier_ratio_per_block"].index(max(comp["outlier_ratio_per_block"]))
    for got, want in zip(comp["per_block_sparsity"], targets):
        assert got == pytest.approx(want, abs=0.005)  # Wanda: int(cols * s) per row


@pytest.mark.e2e
def test_a_dense_record_off_the_schema_is_set_aside_and_evaluated_again(make_config):
    cfg = make_config(method="magnitude", **{"eval.max_windows": 2})
    rec = run(cfg)
    store = RecordStore(cfg["paths"]["results"])
    legacy = store.load(rec["dense_id"])
    del legacy["role"], legacy["headline"]  # as written before the typed pipeline
    store.path(rec["dense_id"]).write_text(json.dumps(legacy))
    again = run(make_config(method="magnitude", **{"eval.max_windows": 2, "method.sparsity": 0.3}))
    dense = store.load(again["dense_id"])
    assert dense["role"] == "decoder" and dense["created"] >= legacy["created"]
    assert len(list(store.dir.glob(f"{rec['dense_id']}.json.corrupt-*"))) == 1
