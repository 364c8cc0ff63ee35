"""The GPTQ perplexity protocol against a direct computation (the whole protocol on the tiny
model's known figure is checked through the pipeline, in test_end_to_end.py)."""
from __future__ import annotations

import math

import pytest
import torch

from eval import data
from eval.perplexity import perplexity, windows


def test_windows_are_non_overlapping_and_drop_the_tail():
    ids = torch.arange(1000)
    w = windows(ids, 300)
    assert w.shape == (3, 300) and torch.equal(w.flatten(), ids[:900])
    with pytest.raises(ValueError):
        windows(torch.arange(10), 300)


def test_perplexity_equals_direct_mean_nll(tiny, data_root):
    src = data.DataSource.from_config(data_root, offline=True)
    ids = data.eval_tokens("wikitext2", src, tiny.tokenizer, 512)
    got = perplexity(tiny.model, ids, 128, batch_size=3, max_windows=7, progress=False)
    nlls = []
    with torch.no_grad():
        for i in range(7):
            x = ids[i * 128:(i + 1) * 128].unsqueeze(0)
            nlls.append(tiny.model(input_ids=x, labels=x).loss.item())  # HF: mean over the 127 targets
    assert got["windows"] == 7 and got["tokens"] == 7 * 127
    assert got["ppl"] == pytest.approx(math.exp(sum(nlls) / 7), rel=1e-5)
    assert perplexity(tiny.model, ids, 128, batch_size=1, max_windows=7, progress=False)["ppl"] == \
        pytest.approx(got["ppl"], rel=1e-5)


def test_nonfinite_perplexity_is_flagged(tiny):
    class Broken(torch.nn.Module):
        def forward(self, input_ids, use_cache=False):
            logits = torch.full((*input_ids.shape, 16), float("nan"))
            return type("Out", (), {"logits": logits})()

    res = perplexity(Broken(), torch.randint(0, 16, (64,)), 16, progress=False)
    assert res["flags"] == ["nonfinite"] and math.isinf(res["ppl"])
