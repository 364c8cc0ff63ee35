"""The task interface: every conf/task/ file names a registered task, each task states its role
and bit base, and hands methods the calibration / training data type it declares."""
from __future__ import annotations

import pytest
import torch

from conftest import ROOT
from eval.tasks.base import Loaded, build_task, task_names
from methods.core.calibration import InputBatches, TokenWindows


def test_every_task_config_names_a_registered_task(make_config):
    from omegaconf import OmegaConf
    configs = {p.stem: OmegaConf.load(p)["name"] for p in (ROOT / "conf" / "task").glob("*.yaml")}
    assert sorted(set(configs.values())) == task_names()   # variants (lm_finetune) name a task too
    for stem, name in configs.items():
        task = build_task(make_config(task=stem))
        assert task.name == name and task.role in ("decoder", "encoder")
        assert task.bit_base == (16 if task.role == "decoder" else 32)  # the survey's bases
        assert task.calibration_type is (TokenWindows if task.role == "decoder" else InputBatches)


def test_lm_task_gives_windows_of_the_valid_text_for_calibration_and_training(make_config, tiny):
    task = build_task(make_config(**{"calib.nsamples": 4, "model.seqlen": 64}))
    task.prepare()
    loaded = Loaded(tiny.model, tiny.tokenizer, tiny.family)
    calib = task.calibration(loaded, seed=0)
    assert isinstance(calib, TokenWindows) and calib.ids.shape == (4, 64)
    train = task.training_windows(loaded, seed=0)
    from eval.data import calibration_stream
    stream = calibration_stream("file", task.data, tiny.tokenizer, path="wikitext-2-tokens/valid.txt")
    assert train.ids.shape == (stream.numel() // 64, 64)
    # a permutation of the stream's non-overlapping windows: nothing from elsewhere (the test split)
    windows = stream[: train.ids.numel()].view(-1, 64)
    assert torch.equal(torch.sort(train.ids.sum(1)).values, torch.sort(windows.sum(1)).values)
    assert not torch.equal(train.ids, windows)  # shuffled by the seed
    batches = task.training_data(loaded, batch_size=8, seed=0).batches  # with next-token targets
    assert torch.equal(torch.cat([b["input_ids"] for b in batches]), train.ids)
    assert all(torch.equal(b["labels"], b["input_ids"]) for b in batches)


def test_lm_finetune_trains_on_its_own_text_and_names_it_in_the_identity(make_config, tiny):
    cfg = make_config(**{"task": "lm_finetune", "model.seqlen": 64, "calib.path": "wikitext-2-raw/wiki.train.raw"})
    task = build_task(cfg)
    task.prepare()
    from eval.identity import file_sha256
    valid = file_sha256(task.data.root / "wikitext-2-tokens/valid.txt")
    assert task.training_identity() == {"source": "file", "join": "\n\n", "data": {"train_text": {"sha256": valid}}}
    loaded = Loaded(tiny.model, tiny.tokenizer, tiny.family)
    from eval.data import calibration_stream
    stream = calibration_stream("file", task.data, tiny.tokenizer, path="wikitext-2-tokens/valid.txt")
    assert task.training_windows(loaded, seed=0).ids.shape == (stream.numel() // 64, 64)   # train_text, not calib
    assert build_task(make_config()).training_identity() is None   # plain lm: no change to existing ids


def test_unknown_task_is_refused(make_config):
    from eval.pipeline import ConfigError, plan
    with pytest.raises(ConfigError, match=r"unknown task 'glue_sst2'; known: lm, mnli, qqp, squad"):
        plan(make_config(**{"task.name": "glue_sst2"}))


def test_a_calibration_stream_is_tokenised_once_per_process_and_again_when_its_file_changes(tmp_path, tiny,
                                                                                              monkeypatch):
    import os

    from eval import data as data_mod
    texts = []
    real = data_mod.tokenize
    monkeypatch.setattr(data_mod, "tokenize", lambda tok, text: texts.append(text) or real(tok, text))
    src = data_mod.DataSource.from_config(tmp_path, offline=True)
    f = tmp_path / "calib.txt"
    f.write_text("the river flows north through the city. " * 50)
    first = data_mod.calibration_stream("file", src, tiny.tokenizer, path=str(f))
    assert torch.equal(data_mod.calibration_stream("file", src, tiny.tokenizer, path=str(f)), first)
    assert len(texts) == 1                                   # a sweep's second run reuses the tokens
    f.write_text("a different calibration text, of another length. " * 50)
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    second = data_mod.calibration_stream("file", src, tiny.tokenizer, path=str(f))
    assert len(texts) == 2 and not torch.equal(second[:first.numel()], first[:second.numel()])
