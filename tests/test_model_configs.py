"""A model config for every PLM of the survey's tables, each saying what hardware it needs, and
none of that in a record's identity."""
from __future__ import annotations

import pandas as pd
import pytest

from conftest import ROOT, base_config

REPORTED = ROOT / "tables" / "reported"
ALIASES = {"gpt2-85m": "gpt2-124m"}   # ZipLM counts GPT-2 (124M) without its embeddings
MODELS = sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml"))


def test_every_plm_of_the_tables_has_a_model_config(tmp_path):
    names = {base_config(tmp_path, model=m)["model"]["name"] for m in MODELS}
    plms = set()
    for f in REPORTED.glob("*.csv"):
        df = pd.read_csv(f)
        plms |= set(df["plm"]) if "plm" in df.columns else {"bert-base"}
    missing = {ALIASES.get(p, p) for p in plms} - names
    assert not missing, missing


@pytest.mark.parametrize("model", MODELS)
def test_large_models_say_what_they_need(model, tmp_path):
    m = base_config(tmp_path, model=model)["model"]
    assert m["name"] and m["path"] and m["dtype"] in ("float32", "float16", "bfloat16")
    if m["dtype"] != "float32":                      # the survey's large decoders
        needs = m.get("needs")
        assert needs and needs["gpu_memory_gb"] > 0 and needs["download_gb"] > 0, model
        big = needs["download_gb"] > 100
        assert needs["offload"] == big and (not big or needs["cpu_memory_gb"] > needs["download_gb"])


def test_hardware_hints_are_not_part_of_a_records_identity(tmp_path):
    from eval.tasks.base import build_task
    cfg = base_config(tmp_path, model="tiny_llama")
    plain = build_task(cfg).dense_identity("cpu")
    cfg["model"]["needs"] = {"gpu_memory_gb": 1}
    assert build_task(cfg).dense_identity("cpu") == plain
