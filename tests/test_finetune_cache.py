"""The encoder baseline's fine-tune cache (eval/finetune.py), on a tiny randomly initialised BERT
with the MiniLM's tokenizer and 2 training steps: trained once per (model, task, recipe), reused
by the next run, retrained for another recipe, and its recipe kept beside the weights."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import base_config, minilm_path

STEPS = {"finetune.epochs": 1, "finetune.batch_size": 4, "finetune.max_train_features": 8}   # 2 steps
TASK = {"model": "minilm", "task": "squad_dev_split", "model.name": "tiny-bert", "task.max_length": 96,
        "task.doc_stride": 16, "task.max_eval_examples": 8}


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory) -> Path:
    from transformers import AutoTokenizer, BertConfig, BertForQuestionAnswering
    out = tmp_path_factory.mktemp("tiny-bert")
    tok = AutoTokenizer.from_pretrained(minilm_path())
    torch.manual_seed(0)
    BertForQuestionAnswering(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                                        num_attention_heads=4, intermediate_size=64, max_position_embeddings=128)
                             ).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def _baseline(results: Path, model_dir: Path, **over) -> Path:
    from eval.tasks.base import build_task
    task = build_task(base_config(results, **TASK, **STEPS, **{"model.path": str(model_dir)}, **over))
    task.prepare()
    return Path(task.baseline(torch.device("cpu")))


@pytest.mark.e2e
def test_a_fine_tune_is_trained_once_per_recipe_and_reused(tmp_path, tiny_bert_dir, monkeypatch):
    import eval.finetune

    results = tmp_path / "results"
    first = _baseline(results, tiny_bert_dir)
    info = json.loads((first / eval.finetune.DONE).read_text())
    assert info["steps"] == 2 and info["finetune"]["max_train_features"] == 8 and info["finetune"]["epochs"] == 1
    assert first.parent == results / "finetuned" and first.name.startswith("tiny-bert-squad_dev_split-")
    assert (first / "model.safetensors").is_file() and not list(first.parent.glob("*.checkpoints"))
    assert info["metrics"]["dev_half"]["examples"] == 8

    def no_training(*_a, **_k):
        raise AssertionError("the cached fine-tune was trained again")
    monkeypatch.setattr(eval.finetune, "finetune", no_training)
    assert _baseline(results, tiny_bert_dir) == first                    # reused, not retrained
    monkeypatch.undo()

    other = _baseline(results, tiny_bert_dir, **{"finetune.lr": 1e-3})   # another recipe: its own checkpoint
    assert other != first and json.loads((other / eval.finetune.DONE).read_text())["finetune"]["lr"] == 1e-3
    assert sorted(p.name for p in (results / "finetuned").iterdir()) == sorted([first.name, other.name])
