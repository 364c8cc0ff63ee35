"""A newcomer adds a kernel format or a model family in one module plus one config, with nothing
else edited, and sees it in its benchmark or table:
  - a kernel format (tests/newcomer/toy_format.py, conf/kernels_bench/toy.yaml): records map to
    it, convert swaps a model's linears for it, the kernel benchmark times it;
  - a model family (tests/newcomer/toy_family.py, conf/model/toy_phi.yaml): a calibrated method
    runs through the engine and a structured one through its Structure, into Table 3.
(A newcomer's methods: test_method_registry.py.)"""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import json
import runpy
from pathlib import Path

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from conftest import ROOT

NEWCOMER = Path(__file__).parent / "newcomer"


@contextlib.contextmanager
def registered(module: str, registry: dict):
    """The newcomer's module run (it registers its thing) for one test; `registry` (complete:
    its package's modules imported) as it was, after."""
    before = dict(registry)
    spec = importlib.util.spec_from_file_location(module, NEWCOMER / f"{module}.py")
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    try:
        yield
    finally:
        registry.clear()
        registry.update(before)


@pytest.fixture
def toy_format():
    from kernels.formats import base
    base.formats()
    with registered("toy_format", base._FORMATS):
        yield


def test_a_newcomers_format_takes_its_records_and_converts_a_model(toy_format, tiny):
    from kernels.convert import convert
    from kernels.formats import format_for, parse
    record = {"compression": {"kind": "quantized", "wbits": 16, "quant_granularity": "channel"}}
    assert format_for(record).key == "fp16w" and parse("fp16w").key == "fp16w"
    assert format_for({"compression": {**record["compression"], "wbits": 4}}).key == "packed-w4-ch"  # the rest as before
    model = copy.deepcopy(tiny.model)
    ids = torch.randint(3, model.config.vocab_size, (1, 32), generator=torch.Generator().manual_seed(0))
    for block in tiny.family.blocks(model):
        for layer in tiny.family.linears(block).values():
            parse("fp16w").compress(layer)
    with torch.no_grad():
        before = model(input_ids=ids).logits
        conv = convert(model, record)
        after = model(input_ids=ids).logits
    assert conv.to_record()["format"] == "fp16w" and conv.to_record()["layers"] == 28
    assert conv.to_record()["backends"] == ["F.linear (fp16 weights, upcast per call)"]
    assert conv.max_weight_rel_err == 0.0
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


@pytest.mark.e2e
def test_a_newcomers_format_is_timed_by_the_kernel_benchmark(toy_format, tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir
    monkeypatch.chdir(ROOT)
    bench = runpy.run_path(str(ROOT / "scripts" / "bench_kernels.py"), run_name="bench_kernels")["run"]
    out = tmp_path / "kernels.json"
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="kernels_bench", overrides=["profile=toy", "device=cpu", f"out={out}",
                                                              "records_from=[]"])
    OmegaConf.set_struct(cfg, False)
    cfg.profiles.toy = OmegaConf.load(NEWCOMER / "conf" / "kernels_bench" / "toy.yaml")
    bench(cfg)
    rep = json.loads(out.read_text())
    layers = [e for e in rep["layers"] if e["format"] == "fp16w"]
    assert layers and all(e["ok"] and e["speedup"] > 0 for e in layers)
    assert all(e["ideal_speedup"] == pytest.approx(2.0) for e in layers if e["bound"] == "bandwidth")
    (e2e,) = [e for e in rep["end_to_end"] if e["format"] == "fp16w"]
    assert e2e["layers"] == 28 and e2e["logits_rel_err"] < 1e-5 and e2e["decode_speedup"] > 0


@pytest.fixture
def toy_family():
    from methods.core import arch
    with registered("toy_family", arch.FAMILIES):
        yield


def small_phi(folder: Path) -> Path:
    """A small Phi model with random weights and the tiny Llama's tokenizer: plumbing for the
    family, never a published row."""
    import shutil

    from transformers import PhiConfig, PhiForCausalLM

    from conftest import TINY
    from eval.models import load
    vocab = len(load(str(TINY)).tokenizer)
    torch.manual_seed(0)
    model = PhiForCausalLM(PhiConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                     vocab_size=vocab, max_position_embeddings=128))
    model.save_pretrained(folder, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TINY / name, folder / name)
    return folder


@pytest.mark.e2e
def test_a_newcomers_family_runs_through_the_engine_and_appears_in_its_table(toy_family, tmp_path):
    """One module (tests/newcomer/toy_family.py) and one model config: a calibrated layer-wise
    method through the engine and a structured one through the family's Structure, in Table 3."""
    from conftest import base_config
    from eval.pipeline import run
    from eval.records import RecordStore
    from tables.build import TABLES, build_table
    folder = small_phi(tmp_path / "toy-phi")
    model = OmegaConf.load(NEWCOMER / "conf" / "model" / "toy_phi.yaml")
    over = {f"model.{k}": v for k, v in model.items() if v is not None}
    over.update({"model.path": str(folder), "eval.max_windows": 2, "calib.nsamples": 4})
    results = tmp_path / "results"
    wanda = run(base_config(results, method="wanda", **{**over, "method.sparsity": 0.5}))
    pruner = run(base_config(results, method="llm_pruner", **{**over, "method.ratio": 0.1, "method.count_embeddings": "false",
                                                                  "timing.repeats": 3}))
    assert wanda["compression"]["comp_rate"] == pytest.approx(0.5, abs=1e-3)
    assert pruner["compression"]["kind"] == "structured" and pruner["compression"]["params_after"] < \
        pruner["compression"]["params_before"]
    table = build_table(TABLES["table3"], RecordStore(results), include_partial=True)
    repro = table[table["source"] == "reproduced"]
    assert set(repro["plm"]) == {"toy-phi"} and set(repro["record"]) == {wanda["id"], pruner["id"]}


@pytest.fixture
def toy_task():
    from eval.tasks import base
    base.task_names()
    with registered("toy_task", base._TASKS):
        yield


@pytest.mark.e2e
def test_a_newcomers_task_gets_its_own_column_in_its_table(toy_task, tmp_path):
    """One module (tests/newcomer/toy_task.py) and one config (conf/task/qnli_squad.yaml): a tiny
    BERT fine-tuned on it (2 steps) and pruned, and Table 2 shows the Δ in the task's own column,
    which the reported table lacks: added, not dropped, in the CSV and the LaTeX."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from conftest import base_config, minilm_path
    from eval.pipeline import run
    from eval.records import RecordStore
    from tables.build import TABLES, build_table
    from tables.latex import to_latex
    model_dir = tmp_path / "tiny-bert"
    tok = AutoTokenizer.from_pretrained(minilm_path())
    torch.manual_seed(0)
    BertForSequenceClassification(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                                             num_attention_heads=4, intermediate_size=64, max_position_embeddings=128,
                                             num_labels=2)).save_pretrained(model_dir, safe_serialization=True)
    tok.save_pretrained(model_dir)
    results = tmp_path / "results"
    cfg = base_config(results, model="minilm", method="magnitude", **{
        "model.path": str(model_dir), "model.name": "tiny-bert", "method.sparsity": 0.5, "finetune.epochs": 1,
        "finetune.batch_size": 8, "finetune.max_train_features": 16})
    cfg["task"] = {**OmegaConf.to_container(OmegaConf.load(NEWCOMER / "conf" / "task" / "qnli_squad.yaml")),
                   "max_eval_examples": 64}
    rec = run(cfg)
    assert rec["task"] == "qnli_squad" and rec["protocol"]["column"]["key"] == "qnli_squad"
    assert rec["metrics"]["qnli_squad"]["dev_half"]["examples"] == 64
    table = build_table(TABLES["table2"], RecordStore(results), include_partial=True)
    row = table[table["record"] == rec["id"]].iloc[0]
    assert row["qnli_squad"] == round(rec["delta"], 2) and pd.isna(row["squad"]) and pd.isna(row["avg"])
    assert list(table.columns).index("qnli_squad") == list(table.columns).index("avg") - 1
    assert "pair task built from the SQuAD dev file" in row["note"]
    assert "& QNLI-S &" in to_latex(TABLES["table2"], table)
    read_back = pd.read_csv(io.StringIO(table.to_csv(index=False)))     # the CSV keeps the column, not its header
    assert r"& qnli\_squad &" in to_latex(TABLES["table2"], read_back)
