"""Data protocol: local files equal the Hub rows, GPTQ's sampling loops are replayed exactly."""
from __future__ import annotations

import gzip
import hashlib
import json
import random

import pytest
import torch

from eval import data

WT2_TEST_SHA256 = "173c87a53759e0201f33e0ccf978e510c2042d7f2cb78229d9a50d79b9e7dd08"


def test_local_wikitext2_rows_rejoin_to_the_file(data_root):
    path = data_root / data.WIKITEXT2_RAW["test"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == WT2_TEST_SHA256
    rows = data.wikitext2_rows_from_file(path)
    assert len(rows) == 4358 and rows.count("") == 1467
    assert "".join(r or " \n" for r in rows) == path.read_text(encoding="utf-8")
    assert rows[1] == " = Robert Boulter = \n" and all(r == "" or r.endswith("\n") for r in rows)


def test_local_file_equals_hub_style_dataset(data_root, tmp_path):
    """The same rows in the Hub's parquet layout, loaded by `datasets`, give the identical string."""
    from conftest import require_package
    datasets = require_package("datasets")
    src = data.DataSource.from_config(data_root, offline=True)
    rows = data.wikitext2_rows(src, "test")
    ds = datasets.Dataset.from_dict({"text": rows})
    ds.to_parquet(tmp_path / "test.parquet")
    hub_like = datasets.load_dataset("parquet", data_files=str(tmp_path / "test.parquet"), split="train")
    assert "\n\n".join(hub_like["text"]) == data.wikitext2_text(src, "test")
    assert data.wikitext2_text(src, "test").startswith("\n\n = Robert Boulter = \n\n\n\n\n Robert Boulter is")


def test_missing_file_offline_names_the_file(tmp_path):
    src = data.DataSource.from_config(tmp_path, offline=True)
    with pytest.raises(data.DataMissing, match=r"wikitext-2-raw/wiki\.train\.raw.*offline"):
        data.wikitext2_rows(src, "train")
    with pytest.raises(data.DataMissing, match=r"c4-validation\.00000-of-00008\.json\.gz"):
        data.c4_shard(src, "validation")


def _reference_token_sampler(ids: torch.Tensor, nsamples: int, seed: int, seqlen: int):
    """GPTQ's get_wikitext2 loop, verbatim in behaviour (global RNG, 2-D tensors)."""
    trainenc = ids.unsqueeze(0)
    random.seed(seed)
    out = []
    for _ in range(nsamples):
        i = random.randint(0, trainenc.shape[1] - seqlen - 1)
        out.append(trainenc[:, i:i + seqlen])
    return torch.cat(out)


def _reference_document_sampler(docs, tok, nsamples: int, seed: int, seqlen: int):
    """GPTQ's get_c4 loop (draw documents until one is long enough)."""
    random.seed(seed)
    out = []
    for _ in range(nsamples):
        while True:
            i = random.randint(0, len(docs) - 1)
            enc = tok(docs[i]).unsqueeze(0)
            if enc.shape[1] > seqlen:
                break
        i = random.randint(0, enc.shape[1] - seqlen - 1)
        out.append(enc[:, i:i + seqlen])
    return torch.cat(out)


@pytest.mark.parametrize("seed", [0, 7])
def test_token_sampler_replays_gptq(seed):
    ids = torch.arange(5000)
    got = data.sample_token_windows(ids, 16, 64, seed)
    assert torch.equal(got, _reference_token_sampler(ids, 16, seed, 64))
    assert not torch.equal(got, data.sample_token_windows(ids, 16, 64, seed + 1))


def test_document_sampler_replays_gptq():
    rng = random.Random(1)
    docs = [" ".join(str(rng.randint(0, 99)) for _ in range(rng.randint(5, 120))) for _ in range(300)]
    tok = lambda text: torch.tensor([int(w) for w in text.split()])  # noqa: E731
    got = data.sample_document_windows(docs, tok, 12, 50, 0)
    assert torch.equal(got, _reference_document_sampler(docs, tok, 12, 0, 50))


def test_real_calibration_never_touches_test_text(data_root, tiny):
    src = data.DataSource.from_config(data_root, offline=True)
    wins = data.calibration_windows("file", src, tiny.tokenizer, 8, 128, 0, path="wikitext-2-tokens/valid.txt")
    valid_ids = data.tokenize(tiny.tokenizer, (data_root / "wikitext-2-tokens/valid.txt").read_text())
    assert wins.shape == (8, 128)
    assert torch.equal(wins, _reference_token_sampler(valid_ids, 8, 0, 128))


def _write_c4(path, docs):
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for d in docs:
            fh.write(json.dumps({"text": d, "timestamp": "2019-04-25T12:57:54Z", "url": "https://x"}) + "\n")


def test_c4_new_protocol_from_local_shards(tmp_path, tiny):
    """Loader test on a small file in C4's real format (no figures are derived from it)."""
    docs = [f"Document number {i} talks about the city and the river. " * (i % 5 + 1) for i in range(1200)]
    _write_c4(tmp_path / data.C4_SHARDS["validation"], docs)
    _write_c4(tmp_path / data.C4_SHARDS["train"], docs[:50])
    src = data.DataSource.from_config(tmp_path, offline=True)
    seqlen = 32
    ids = data.eval_tokens("c4", src, tiny.tokenizer, seqlen)
    expected = data.tokenize(tiny.tokenizer, " ".join(docs[:1100]))[: 256 * seqlen]
    assert torch.equal(ids, expected) and ids.numel() == 256 * seqlen
    wins = data.calibration_windows("c4", src, tiny.tokenizer, 4, seqlen, 0)
    tok = lambda t: data.tokenize(tiny.tokenizer, t)  # noqa: E731
    assert torch.equal(wins, _reference_document_sampler(docs[:50], tok, 4, 0, seqlen))
