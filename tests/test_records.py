"""Records: stable ids, atomic writes, JSON without NaN."""
from __future__ import annotations

import json
import os

import pytest

from eval.records import TMP_PREFIX, RecordStore, record_id


def test_record_id_ignores_key_order_but_not_values():
    a = {"method": {"name": "wanda", "sparsity": 0.5}, "seed": 0}
    b = {"seed": 0, "method": {"sparsity": 0.5, "name": "wanda"}}
    assert record_id(a) == record_id(b)
    assert record_id(a) != record_id({**a, "seed": 1})


def test_write_is_atomic_and_nan_becomes_null(tmp_path, monkeypatch):
    store = RecordStore(tmp_path)
    store.write({"id": "abc", "metrics": {"ppl": float("inf")}})
    assert json.loads(store.path("abc").read_text())["metrics"]["ppl"] is None

    def crash(*_a, **_k):
        raise KeyboardInterrupt  # killed between the temp write and the rename

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        store.write({"id": "def", "metrics": {}})
    assert not store.exists("def")
    assert not list(store.dir.glob(f"{TMP_PREFIX}*"))
    assert [r["id"] for r in store] == ["abc"]


def test_stale_partials_are_ignored_and_cleaned(tmp_path):
    store = RecordStore(tmp_path)
    (store.dir / f"{TMP_PREFIX}x.json").write_text('{"id": "half')
    old = os.path.getmtime(store.dir / f"{TMP_PREFIX}x.json") - 3600
    os.utime(store.dir / f"{TMP_PREFIX}x.json", (old, old))
    assert list(store) == []
    assert store.remove_partials() == 1


def test_rates_come_from_the_typed_result():
    from methods.core.base import CompressionResult, Kind, RateBasis
    from methods.core.model_facts import ModelSize
    before = ModelSize(params=1000, embedding_params=200, linear_weights=600, linear_zeros=0, per_block_sparsity=(0.0,))
    pruned = ModelSize(1000, 200, 600, 300, (0.5,))
    r = CompressionResult(Kind.UNSTRUCTURED, "W", before, pruned).rates(16)
    assert r == {"comp_rate": 0.5, "model_comp_rate": 0.3}
    # 600 weights at 4 bits plus 100 fp16 statistics, against fp16 (decoders) or fp32 (encoders)
    q = CompressionResult(Kind.QUANTIZED, "W", before, before, stored_bits=600 * 4 + 1600, quantized_weights=600)
    assert q.rates(16)["comp_rate"] == pytest.approx(1 - 4000 / (16 * 600))
    assert q.rates(32)["comp_rate"] == pytest.approx(1 - 4000 / (32 * 600))
    assert q.rates(16)["model_comp_rate"] == pytest.approx(1 - (4000 + 16 * 400) / (16 * 1000))
    smaller = ModelSize(750, 200, 350, 0, (0.0,))
    s = CompressionResult(Kind.STRUCTURED, "N,H", before, smaller).rates(16)
    assert s["comp_rate"] == 0.25 and s["comp_rate_no_embeddings"] == pytest.approx(250 / 800)
    narrower = ModelSize(600, 100, 350, 0, (0.0,))    # hidden dims pruned: the embeddings shrank too
    n = CompressionResult(Kind.STRUCTURED, "E,N,H", before, narrower).rates(16)
    assert n["comp_rate_no_embeddings"] == pytest.approx((800 - 500) / 800)
    # a row counted as its paper counts it (nominal bits), the full-overhead rate kept beside it
    nq = CompressionResult(Kind.QUANTIZED, "W", before, before, stored_bits=600 * 4 + 1600, quantized_weights=600,
                           nominal_rate=1 - 4 / 32).rates(16)
    assert nq["comp_rate"] == 0.875 and nq["overhead_comp_rate"] == pytest.approx(1 - 4000 / (16 * 600))
    f = CompressionResult(Kind.STRUCTURED, "N,H", before, smaller, RateBasis.FLOPS, flops_before=100, flops_after=40)
    assert f.rates(32)["comp_rate"] == pytest.approx(0.6) and f.rates(32)["param_comp_rate"] == 0.25
