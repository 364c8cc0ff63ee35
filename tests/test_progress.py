"""Progress: `progress=false` writes no bar at all (the harness's and the libraries'); outside a
terminal, progress is plain periodic lines, never a carriage return; in a terminal, tqdm; the run's
summary line ends its run.log."""
from __future__ import annotations

import io
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from conftest import DATA_ROOT, ROOT, TINY
from eval.perplexity import perplexity
from methods.core import progress
from methods.core.engine import Session
from methods.core.progress import EVERY_S_ENV, Lines, bar, library_bars


class _Logits(nn.Module):
    def __init__(self, vocab: int = 16):
        super().__init__()
        self.emb = nn.Embedding(vocab, vocab)

    def forward(self, input_ids, use_cache=False):
        return SimpleNamespace(logits=self.emb(input_ids))


def _engine_walk(enabled: bool) -> None:
    blocks = nn.ModuleList(nn.Linear(4, 4) for _ in range(3))
    session = Session(blocks, SimpleNamespace(blocks=lambda m: m), torch.device("cpu"), progress=enabled)
    session.walk(lambda i, block, inputs: None, desc="walk")


def _perplexity(enabled: bool) -> None:
    perplexity(_Logits(), torch.arange(64) % 16, seqlen=8, batch_size=2, progress=enabled, desc="ppl")


@pytest.fixture
def every_update(monkeypatch):
    """A line at every update: any output that `enabled` lets through shows."""
    monkeypatch.setenv(EVERY_S_ENV, "0")


def test_disabled_engine_and_perplexity_write_nothing(capfd, every_update):
    _engine_walk(enabled=False)
    _perplexity(enabled=False)
    assert capfd.readouterr().err == ""


def test_outside_a_terminal_progress_is_lines_without_carriage_returns(capfd, every_update):
    _engine_walk(enabled=True)
    _perplexity(enabled=True)
    err = capfd.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert [ln for ln in lines if ln.startswith("walk:")] == [
        "walk: 1/3 (33%), 0s elapsed, ~0s left", "walk: 2/3 (67%), 0s elapsed, ~0s left",
        "walk: 3/3 (100%), 0s elapsed, done"]
    assert sum(ln.startswith("ppl:") for ln in lines) == 4   # 8 windows in batches of 2: 3 + done


def test_lines_come_every_n_seconds(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    out = io.StringIO()
    lines = Lines(total=100, desc="train", every=30, file=out)
    for now[0] in (10.0, 31.0, 40.0, 65.0):
        lines.update(1)
    now[0] = 70.0
    lines.close()
    assert out.getvalue().splitlines() == ["train: 2/100 (2%), 31s elapsed, ~1519s left",
                                           "train: 4/100 (4%), 65s elapsed, ~1560s left",
                                           "train: 4/100 (4%), 70s elapsed, done"]


def test_a_loop_shorter_than_the_interval_writes_nothing(capfd):
    list(bar(range(5), desc="quick"))
    assert capfd.readouterr().err == ""


def test_a_terminal_gets_a_tqdm_bar(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True
    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    assert list(bar(range(3), desc="tty")) == [0, 1, 2]
    assert "\rtty: 100%" in term.getvalue()


def test_the_interval_is_checked(monkeypatch):
    monkeypatch.setenv(EVERY_S_ENV, "-1")
    with pytest.raises(ValueError, match=EVERY_S_ENV):
        progress.every_s()


def test_disabled_library_bars_write_nothing_and_are_set_back(capfd, every_update, tiny_path):
    import datasets
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as tf

    before = (tf.is_progress_bar_enabled(), datasets.are_progress_bars_disabled())
    with library_bars(False):
        AutoModelForCausalLM.from_pretrained(tiny_path)
        datasets.Dataset.from_dict({"a": list(range(10))}).map(lambda x: x)
    assert capfd.readouterr().err == ""
    assert (tf.is_progress_bar_enabled(), datasets.are_progress_bars_disabled()) == before

    with library_bars(True):   # stderr is not a terminal here: transformers' bar as lines, datasets' off
        AutoModelForCausalLM.from_pretrained(tiny_path)
        datasets.Dataset.from_dict({"a": list(range(10))}).map(lambda x: x)
    err = capfd.readouterr().err
    assert "\r" not in err and "Map" not in err
    assert "Loading weights: 1/" in err and err.splitlines()[-1].endswith("done")


@pytest.mark.e2e
def test_the_summary_line_ends_run_log_and_is_printed_once(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "run.py"), "method=dense", "eval.max_windows=2",
                          "threads=1", "progress=false", f"paths.results={tmp_path}", f"paths.data_root={DATA_ROOT}",
                          f"model.path={TINY}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    (log,) = (tmp_path / "hydra").glob("*/run.log")
    summary = log.read_text().splitlines()[-1]
    assert "tiny-llama-wt2 dense: compression rate" in summary and "ppl wikitext2" in summary
    assert out.stdout.count("tiny-llama-wt2 dense: compression rate") == 1
    assert "\r" not in out.stderr and "Loading" not in out.stderr   # progress=false: not even transformers' bar
