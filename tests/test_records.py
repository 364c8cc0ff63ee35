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
