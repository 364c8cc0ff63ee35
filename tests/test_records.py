"""Records: stable ids, atomic writes, JSON without NaN."""
from __future__ import annotations

import json
import os
import socket
import stat
import subprocess

import pytest

from eval.records import TMP_PREFIX, CorruptRecord, RecordStore, record_id


def test_record_id_ignores_key_order_but_not_values():
    a = {"method": {"name": "wanda", "sparsity": 0.5}, "seed": 0}
    b = {"seed": 0, "method": {"sparsity": 0.5, "name": "wanda"}}
    assert record_id(a) == record_id(b)
    assert record_id(a) != record_id({**a, "seed": 1})


def make_record(name: str, **over) -> dict:
    """A minimal record of the schema (its id the hash of its identity)."""
    identity = {"model": name}
    return {"id": record_id(identity), "identity": identity, "config": {}, "kind": "dense", "task": "lm",
            "role": "decoder", "metrics": {"wikitext2": {"ppl": 10.0}}, "created": "2026-01-01T00:00:00",
            "preset": "dense", "rows": {}, "protocol": {"name": "perplexity", "complete": True, "partial": [], "column": None}, **over}


def test_write_is_atomic_and_nan_becomes_null(tmp_path, monkeypatch):
    store = RecordStore(tmp_path)
    a = make_record("a", metrics={"wikitext2": {"ppl": float("inf")}})
    store.write(a)
    assert json.loads(store.path(a["id"]).read_text())["metrics"]["wikitext2"]["ppl"] is None

    def crash(*_a, **_k):
        raise KeyboardInterrupt  # killed between the temp write and the rename

    monkeypatch.setattr(os, "replace", crash)
    b = make_record("b")
    with pytest.raises(KeyboardInterrupt):
        store.write(b)
    assert not store.exists(b["id"])
    assert not list(store.dir.glob(f"{TMP_PREFIX}*"))
    assert [r["id"] for r in store] == [a["id"]]


def test_an_invalid_record_is_never_written(tmp_path):
    store = RecordStore(tmp_path)
    with pytest.raises(ValueError, match="field 'role'"):
        store.write({k: v for k, v in make_record("a").items() if k != "role"})
    with pytest.raises(ValueError, match="not the hash of its identity"):
        store.write({**make_record("a"), "id": "0123456789abcdef"})


def test_records_are_written_with_the_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        path = RecordStore(tmp_path).write(make_record("a"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


@pytest.mark.parametrize("content, reason", [
    ('{"id": "trunc', "not JSON"), ("", "empty file"), ("[1, 2]", "a list"),
    ('{"id": "x", "metrics": {}}', "no schema version"), ('{"schema": 1, "id": "x"}', "schema 1"),
])
def test_a_corrupt_record_is_named_with_its_path(tmp_path, content, reason):
    store = RecordStore(tmp_path)
    bad = store.dir / "0123456789abcdef.json"
    bad.write_text(content)
    (item,) = list(store.scan())
    assert item.record is None and reason in item.error and item.path == bad
    with pytest.raises(CorruptRecord, match=str(bad)):
        store.load("0123456789abcdef")
    assert store.valid("0123456789abcdef") is None            # a run redoes it ...
    assert not bad.exists() and len(list(store.dir.glob("0123456789abcdef.json.corrupt-*"))) == 1  # ... kept aside


def test_orphaned_partials_are_removed_and_live_writers_spared(tmp_path):
    store = RecordStore(tmp_path)
    host = socket.gethostname()
    dead = _dead_pid()
    orphan = store.dir / f"{TMP_PREFIX}{host}-{dead}-abc.json"
    mine = store.dir / f"{TMP_PREFIX}{host}-{os.getpid()}-def.json"
    remote_young = store.dir / f"{TMP_PREFIX}othernode-123-ghi.json"
    remote_old = store.dir / f"{TMP_PREFIX}othernode-456-jkl.json"
    unnamed_old = store.dir / f"{TMP_PREFIX}x.json"
    for p in (orphan, mine, remote_young, remote_old, unnamed_old):
        p.write_text('{"id": "half')
    for p in (remote_old, unnamed_old):
        t = p.stat().st_mtime - 7200
        os.utime(p, (t, t))
    assert list(store) == []
    assert store.remove_partials() == 3
    assert mine.exists() and remote_young.exists()
    assert not orphan.exists() and not remote_old.exists() and not unnamed_old.exists()


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


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
