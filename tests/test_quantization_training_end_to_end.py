"""Quantization-aware training end to end, CI-sized, on the real offline models: TernaryBERT on the
MiniLM against post-training ternarisation (TWN) at equal bits, and QLoRA on the tiny Llama
against NF4 without adaptors; Tables 4 and 5 take the records beside the reported rows."""
from __future__ import annotations

import pytest

from conftest import MINILM_TEACHER, require_minilm_teacher, squad_f1

pytestmark = pytest.mark.slow

ENCODER = {"model": "minilm", "task": "squad_dev_split", "model.finetuned": str(MINILM_TEACHER),
           "task.max_length": 128, "task.doc_stride": 64, "task.max_eval_examples": 200}
TRAIN = {"train": "cpu_short", "train.steps": 40, "train.batch_size": 8, "train.checkpoint_every": 0}


@pytest.fixture(scope="module")
def encoder_runs(tmp_path_factory):
    require_minilm_teacher()
    from conftest import base_config
    from eval.pipeline import run
    results = tmp_path_factory.mktemp("qat") / "results"
    equal_bits = {"method.embeddings": False, "method.abits": 16}   # weights of the block linears, 2 bits
    return {"ternarybert": run(base_config(results, method="ternarybert", **ENCODER, **TRAIN, **equal_bits)),
            "twn": run(base_config(results, method="twn", **ENCODER)), "results": results}


def test_ternarybert_beats_post_training_ternarisation_at_equal_bits(encoder_runs):
    tb, twn = encoder_runs["ternarybert"], encoder_runs["twn"]
    assert tb["compression"]["wbits"] == 2 and twn["compression"]["wbits"] == 2
    assert tb["compression"]["quantized_weights"] == twn["compression"]["quantized_weights"]
    assert tb["training"]["steps"] == 40
    assert squad_f1(tb) > squad_f1(twn) + 5, (squad_f1(tb), squad_f1(twn))


def test_table_4_takes_the_qat_rows(encoder_runs):
    from eval.records import RecordStore
    from tables.build import TABLES, build_table
    t4 = build_table(TABLES["table4"], list(RecordStore(encoder_runs["results"])))
    mine = t4[t4["source"] == "reproduced"]
    assert set(mine["method"]) == {"TernaryBERT", "TernaryBERT (post-training)"}
    row = mine[mine["method"] == "TernaryBERT"].iloc[0]
    assert row["comp_rate"] == pytest.approx(1 - 2 / 32) and row["cost"] == "high" and row["train_steps"] == 40


def test_qlora_lowers_perplexity_relative_to_nf4_without_adaptors(tmp_path):
    from conftest import base_config
    from eval.pipeline import run
    common = {"task": "lm_finetune", "eval.max_windows": 32}
    nf4 = run(base_config(tmp_path, method="nf4", **common))
    qlora = run(base_config(tmp_path, method="qlora", **common, **{"method.r": 8, "train": "cpu_short",
                                                                   "train.steps": 20, "train.batch_size": 4,
                                                                   "train.lr": 1e-3, "train.checkpoint_every": 0}))
    # trained on the WikiText-2 valid text, never the test split: by name in the config, by content in the identity
    from conftest import DATA_ROOT
    from eval.identity import file_sha256
    assert qlora["config"]["task"]["train_text"]["path"].endswith("valid.txt")
    valid, test = (file_sha256(DATA_ROOT / f) for f in ("wikitext-2-tokens/valid.txt", "wikitext-2-raw/wiki.test.raw"))
    assert qlora["identity"]["train_text"]["data"]["train_text"]["sha256"] == valid != test
    assert qlora["compression"]["comp_rate"] == pytest.approx(0.875)
    ppl = {name: r["metrics"]["wikitext2"]["ppl"] for name, r in (("nf4", nf4), ("qlora", qlora))}
    assert ppl["qlora"] < ppl["nf4"] - 1, ppl
