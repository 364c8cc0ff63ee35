"""Method metadata: the registry, conf/method/ and the table specs agree; a newcomer's method (one
module plus one config file) runs through the pipeline and shows up in its table; method kinds
are checked before any work."""
from __future__ import annotations

import dataclasses
import importlib.util
import typing
from pathlib import Path

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from conftest import ROOT
from eval.pipeline import ConfigError, plan, run
from methods.core.base import LayerwiseMethod, ModelMethod, TrainedMethod, build, registry, settings_of
from methods.core.settings import Count, Fraction, SettingError, check_settings, settings_type
from methods.core.hooks import forward_hooks
from tables.build import TABLES, build_table, reported

NEWCOMER = Path(__file__).parent / "newcomer"


def _configs() -> dict[str, dict]:
    files = sorted((ROOT / "conf" / "method").glob("*.yaml"))
    return {p.stem: OmegaConf.to_container(OmegaConf.load(p)) for p in files}


def test_every_method_config_builds_and_every_method_has_a_config():
    configs = _configs()
    for stem, cfg in configs.items():
        knobs = dict(cfg)
        build(knobs.pop("name"), **knobs)  # a config naming an unknown method or knob fails here
    named = {cfg["name"] for cfg in configs.values()}
    shipped = {name for name, cls in registry().items() if cls.__module__.startswith("methods.")}
    assert shipped <= named, sorted(shipped - named)


def test_table_metadata_names_existing_tables_and_the_survey_references():
    labels = {key: reported(spec) for key, spec in TABLES.items()}
    for stem, cfg in _configs().items():
        knobs = dict(cfg)
        method = build(knobs.pop("name"), **knobs)
        for key in method.rows:
            assert key in TABLES, (stem, key)
        for key in TABLES:
            row = method.table_row(key)
            if row is None:
                continue
            rep = labels[key]
            same = rep[rep["method"] == row.label]
            if not same.empty:  # the survey lists this method in this table: same reference number
                assert str(same.iloc[0]["ref"]) == row.ref, (stem, key, row)
            kind_col = TABLES[key].kind_column
            if kind_col == "uniform":
                assert row.uniform in ("UQ", "NUQ"), (stem, key, row)


def test_every_method_declares_a_typed_settings_class_that_its_presets_fit():
    for name, cls in registry().items():
        fields = {f.name: f.type for f in dataclasses.fields(settings_type(cls))}
        assert set(fields) == settings_of(cls), name          # every constructor setting, parents' included
        untyped = [k for k, t in fields.items() if t is typing.Any]
        assert not untyped, (name, untyped)
    for stem, cfg in _configs().items():
        knobs = dict(cfg)
        check_settings(registry()[knobs.pop("name")], knobs)  # raises at the first misfit


class _Toy(LayerwiseMethod):
    """A setting's range comes from its declared type, not from its name."""

    def __init__(self, keep: Fraction = 0.5, rate: float = 2.0, widths: tuple[Count, ...] = (1, 2)):
        self.keep, self.rate, self.widths = keep, rate, widths


@pytest.mark.parametrize("knobs, message", [
    ({"keep": 1.5}, "method.keep=1.5 is out of range: it must be a number >= 0 and < 1"),
    ({"keep": "half"}, "method.keep='half' is out of range: it must be a number >= 0 and < 1"),
    ({"widths": [1, 0]}, "method.widths=[1, 0] is out of range: it must be a list, each an integer >= 1"),
])
def test_a_method_setting_is_checked_against_its_declared_type_before_the_method_is_built(knobs, message):
    with pytest.raises(SettingError) as err:
        check_settings(_Toy, knobs)
    assert str(err.value) == message
    check_settings(_Toy, {"rate": 5.0, "keep": 0.0, "widths": [3]})   # `rate` declares no range: 5.0 is fine


@pytest.mark.parametrize("name, knobs, message", [
    ("gptq", {"wbits": "four"}, "method.wbits='four' is out of range: it must be an integer >= 1 and <= 16"),
    ("finequant", {"outlier_ratio": 0}, "method.outlier_ratio=0 is out of range: it must be a number > 0"),
    ("sparsegpt_gptq", {"steps": "[{name: wanda, sparsity: 0.5}, {name: sparsegpt, percdamp: 2}]"},
     "method.steps.1.percdamp=2 is out of range: it must be a number >= 0 and <= 1"),
])
def test_a_run_with_a_method_setting_out_of_its_range_stops_in_one_line_before_loading(make_config, name, knobs,
                                                                                       message):
    over = {"method": name, **{f"method.{k}": v for k, v in knobs.items()}}
    with pytest.raises(ConfigError) as err:
        plan(make_config(**over))
    assert str(err.value) == message


def _device_check():
    spec = importlib.util.spec_from_file_location("device_check_trained", ROOT / "scripts" / "device_check_trained.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_device_check_list_is_every_trained_pruner_and_quantizer_the_registry_holds():
    check = _device_check()
    listed = {group: {name for name, _, _ in check.cases(group)} for group in ("pruning", "quantization")}
    for name, cls in registry().items():
        group = cls.__module__.split(".")[1:2]
        if issubclass(cls, TrainedMethod) and group in (["pruning"], ["quantization"]):
            assert cls.smoke and name in listed[group[0]], name     # declares its short checks, and is listed
    for group in listed:
        for name, knobs, _ in check.cases(group):
            check_settings(registry()[name], knobs, f"{name}.smoke")


@pytest.mark.e2e
@pytest.mark.parametrize("group, name", [("pruning", "top_drop_ft"), ("quantization", "mrem"),
                                         ("quantization", "wu_int4")])
def test_a_device_check_case_of_each_kind_runs_on_the_cpu(group, name):
    check = _device_check()
    [(_, knobs, run)] = [c for c in check.cases(group) if c[0] == name][:1]
    out = run(name, knobs, torch.device("cpu"))
    assert out["ok"] and 0 < out["comp_rate"] < 1, out


def test_every_method_has_one_kind():
    for name, cls in registry().items():
        kinds = [k for k in (LayerwiseMethod, ModelMethod, TrainedMethod) if issubclass(cls, k)]
        assert len(kinds) == 1, (name, kinds)


@pytest.mark.parametrize("over, message", [
    ({"method": "kwon"}, r"method 'kwon' calibrates on InputBatches, and task 'lm' gives TokenWindows"),
    ({"method": "outlier_suppression"}, r"calibrates on InputBatches"),
])
def test_a_method_gets_the_calibration_type_it_needs(make_config, over, message):
    with pytest.raises(ConfigError, match=message):
        plan(make_config(**over))


def test_compose_rejects_a_step_it_cannot_chain_before_any_work(make_config):
    cfg = make_config()
    cfg["method"] = {"name": "compose", "steps": [{"name": "wanda", "sparsity": 0.5},
                                                  {"name": "llm_pruner", "ratio": 0.2}]}
    with pytest.raises(ConfigError, match=r"compose chains layer-wise methods.*'llm_pruner' is a whole-model"):
        plan(cfg)


def test_forward_hooks_are_removed_even_when_the_forward_fails():
    layer = torch.nn.Linear(3, 3)
    seen = []
    with pytest.raises(RuntimeError):
        with forward_hooks(pre=[(layer, lambda _m, a: seen.append(a[0]))]):
            layer(torch.ones(1, 3))
            raise RuntimeError("boom")
    layer(torch.ones(1, 3))
    assert len(seen) == 1 and not layer._forward_pre_hooks


@pytest.mark.e2e
def test_a_newcomers_methods_run_and_appear_in_their_table(make_config):
    """One module (tests/newcomer/toy_methods.py) and one config file each; no other change."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("toy_methods", NEWCOMER / "toy_methods.py")
    spec.loader.exec_module(importlib.util.module_from_spec(spec))  # registers both methods
    small = {"eval.max_windows": 3, "calib.nsamples": 4}
    records = []
    for name in ("toy_act_prune", "toy_last_block_drop"):
        cfg = make_config(**small)
        cfg["method"] = OmegaConf.to_container(OmegaConf.load(NEWCOMER / "conf" / "method" / f"{name}.yaml"))
        records.append(run(cfg))
    pruned, dropped = records
    assert pruned["compression"]["kind"] == "unstructured"
    assert pruned["compression"]["comp_rate"] == pytest.approx(0.3, abs=1e-3)
    assert dropped["compression"]["kind"] == "structured" and "speedup" in dropped
    from eval.records import RecordStore
    table = build_table(TABLES["table3"], RecordStore(cfg["paths"]["results"]), include_partial=True)
    repro = table[table["source"] == "reproduced"].set_index("method")
    # a method without a declared row appears under its registered name; one with a row, under its label
    assert repro.loc["toy_act_prune", "record"] == pruned["id"]
    assert repro.loc["Toy block drop", "granularity"] == "L"
    assert repro.loc["Toy block drop", "speedup"] > 0
    assert pd.isna(repro.loc["toy_act_prune", "speedup"])


@pytest.mark.parametrize("over, message", [
    ({"method": "ternarybert"}, r"task 'lm' has no training recipe for 'ternarybert': it trains encoders"),
    ({"method": "qlora", "model": "minilm", "task": "squad_dev_split"},
     r"task 'squad_dev_split' has no training recipe for 'qlora': it trains decoders; use task=lm_finetune"),
])
def test_a_trained_method_refuses_a_task_of_the_other_role_before_any_work(make_config, over, message):
    with pytest.raises(ConfigError, match=message):
        plan(make_config(**over))


def test_the_methods_page_is_what_the_registry_and_the_presets_generate():
    """docs/methods.md is generated (scripts/method_docs.py): a new method or preset that is not
    on it fails here, with the command that writes it."""
    import runpy
    render = runpy.run_path(str(ROOT / "scripts" / "method_docs.py"), run_name="method_docs")["render"]
    page = (ROOT / "docs" / "methods.md").read_text()
    assert page == render(), "docs/methods.md is out of date: run `python scripts/method_docs.py`"
    assert "| `sparsegpt` | SparseGPT [40] | `sparsegpt` (" in page       # a preset, its row and its method
