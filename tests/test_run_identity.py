"""A run's identity is every setting that can change a number, as bound (defaults applied), plus
the method's version, and nothing that cannot: one test per rule (planning only, no weights)."""
from __future__ import annotations

import inspect

import pytest

from eval.pipeline import plan
from methods.core.base import build, registry


def test_a_method_spelled_with_or_without_its_defaults_plans_to_one_id(make_config):
    bare = plan(make_config(method="sparsegpt"))
    spelled = plan(make_config(method="sparsegpt", **{"method.blocksize": 128, "method.percdamp": 0.01}))
    assert bare.rid == spelled.rid
    # an omitted default: the preset's knob removed from the config binds to the constructor's default
    cfg = make_config(method="sparsegpt")
    del cfg["method"]["blocksize"]
    assert plan(cfg).rid == bare.rid
    assert bare.identity["method"]["settings"]["blocksize"] == 128


def test_a_preset_name_is_not_part_of_the_id(make_config):
    a = plan(make_config(method="sparsegpt"))
    renamed = plan(make_config(method="sparsegpt", **{"method.preset": "my_sparsegpt"}))
    assert a.rid == renamed.rid and "preset" not in a.identity["method"]["settings"]


def test_a_changed_default_plans_to_another_id(make_config, monkeypatch):
    from methods.pruning.sparsegpt import SparseGPT
    cfg = make_config(method="sparsegpt")
    del cfg["method"]["percdamp"]
    before = plan(cfg).rid
    init = SparseGPT.__init__.__wrapped__
    with_defaults = [p.name for p in inspect.signature(init).parameters.values()
                     if p.default is not p.empty and p.kind is p.POSITIONAL_OR_KEYWORD]
    defaults = list(init.__defaults__)
    defaults[with_defaults.index("percdamp")] = 0.05
    monkeypatch.setattr(init, "__defaults__", tuple(defaults))
    after = plan(cfg)
    assert after.identity["method"]["settings"]["percdamp"] == 0.05 and after.rid != before


def test_a_new_method_version_plans_to_another_id(make_config, monkeypatch):
    from methods.pruning.sparsegpt import SparseGPT
    before = plan(make_config(method="sparsegpt")).rid
    monkeypatch.setattr(SparseGPT, "version", SparseGPT.version + 1)
    assert plan(make_config(method="sparsegpt")).rid != before


def test_engine_batch_size_is_part_of_a_calibrated_run_id(make_config):
    a = plan(make_config(method="sparsegpt"))
    assert a.rid != plan(make_config(method="sparsegpt", **{"engine.batch_size": 1})).rid
    assert a.dense_rid == plan(make_config(method="sparsegpt", **{"engine.batch_size": 1})).dense_rid


@pytest.mark.parametrize("over", [{"model.dtype": "bfloat16"}, {"eval.batch_size": 4}, {"seed": 1},
                                  {"calib.nsamples": 64}, {"kernels.convert": "true"}])
def test_every_setting_that_changes_a_number_changes_the_id(make_config, over):
    assert plan(make_config(method="sparsegpt")).rid != plan(make_config(method="sparsegpt", **over)).rid


@pytest.mark.parametrize("over", [{"progress": "false"}, {"force": "true"}, {"engine.keep_codes": "false"},
                                  {"train.checkpoint_every": 7}, {"save_dir": "/tmp/elsewhere"},
                                  {"timing.repeats": 9}])
def test_settings_that_change_no_number_of_this_run_stay_out(make_config, over):
    # SparseGPT's masked weights are not timed (they are no faster): timing settings stay out too
    assert plan(make_config(method="sparsegpt")).rid == plan(make_config(method="sparsegpt", **over)).rid


def test_the_timing_settings_are_part_of_a_timed_run_id(make_config):
    a = plan(make_config(method="block_drop"))
    assert a.identity["timing"] == {"inputs": 8, "repeats": 5}      # bound: the task's own count
    assert a.rid == plan(make_config(method="block_drop", **{"timing.inputs": 8})).rid
    assert a.rid != plan(make_config(method="block_drop", **{"timing.repeats": 7})).rid
    assert a.rid != plan(make_config(method="block_drop", **{"timing.inputs": 4})).rid


def test_every_preset_builds_to_a_distinct_identity():
    """Two presets with one identity would be one run under two labels: the second never runs."""
    from pathlib import Path

    from omegaconf import OmegaConf

    from eval.identity import canonical
    seen: dict[str, str] = {}
    for path in sorted((Path(__file__).resolve().parent.parent / "conf" / "method").glob("*.yaml")):
        knobs = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        assert knobs.get("preset") == path.stem, f"{path.name}: `preset` must name its file"
        key = canonical(build(knobs.pop("name"), **knobs).identity())
        assert key not in seen, f"{path.stem} and {seen.get(key)} are one run"
        seen[key] = path.stem


def test_every_method_has_a_version_and_json_settings():
    import json
    for name, cls in registry().items():
        assert isinstance(cls.version, int) and cls.version >= 1, name
    ident = build("compose", steps=[{"name": "sparsegpt", "sparsity": 0.5}, {"name": "gptq", "wbits": 4}]).identity()
    json.dumps(ident)
    assert [s["name"] for s in ident["settings"]["steps"]] == ["sparsegpt", "gptq"]
    assert ident["settings"]["steps"][1]["settings"]["group_size"] == -1        # the step's defaults bound
