"""End to end on the tiny trained Llama: quantization methods, composed methods, Table 5."""
from __future__ import annotations

import pandas as pd
import pytest

from conftest import DECODER, base_config
from eval.records import RecordStore
from eval.pipeline import run
from tables.build import TABLES, build_table
from tables.files import write

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def results(shared_results):
    return shared_results   # the dense record at DECODER is the pruning grid's (test_end_to_end.py)


def _ppl(rec):
    return rec["metrics"]["wikitext2"]["ppl"]


def test_gptq_beats_rtn_at_3_bits(results):
    rtn = run(base_config(results, method="rtn", **{"method.wbits": 3}, **DECODER))
    gptq = run(base_config(results, method="gptq", **{"method.wbits": 3}, **DECODER))
    assert rtn["metrics"]["wikitext2"]["windows"] == gptq["metrics"]["wikitext2"]["windows"] == 16
    assert _ppl(gptq) < _ppl(rtn)
    # the table's rate: OPTQ's nominal 3 bits against fp16 (the preset's nominal_base); the full
    # overhead beside it: 3-bit codes + an fp16 scale and zero per output row (per block 2,656 rows,
    # 790,528 weights)
    assert gptq["compression"]["comp_rate"] == pytest.approx(1 - 3 / 16)
    assert gptq["compression"]["overhead_comp_rate"] == pytest.approx(1 - (3 + 32 * 2656 / 790528) / 16)


# plumbing: AWQ's scale search on 2,048 of the calibration tokens (its default 8,192 takes half a minute here)
PLUMBING = {"awq": {"method.search_tokens": 2048}}


@pytest.mark.parametrize("method", ["rtn", "gptq", "awq", "smoothquant", "owq", "spqr", "squeezellm", "zeroquant"])
def test_every_method_at_8_bits_is_within_1_percent_of_dense(results, method):
    rec = run(base_config(results, method=method, **{"method.wbits": 8}, **DECODER, **PLUMBING.get(method, {})))
    dense = RecordStore(results).load(rec["dense_id"])
    assert rec["compression"]["wbits"] == 8
    assert abs(_ppl(rec) / _ppl(dense) - 1) < 0.01, (_ppl(rec), _ppl(dense))


def test_nf4_is_close_to_dense(results):
    rec = run(base_config(results, method="nf4", **DECODER))
    dense = RecordStore(results).load(rec["dense_id"])
    assert rec["compression"]["bits_per_weight"] == pytest.approx(4.129, abs=0.002)
    assert abs(_ppl(rec) / _ppl(dense) - 1) < 0.02


def test_sparsegpt_then_gptq_composes(results):
    rec = run(base_config(results, method="sparsegpt_gptq", **DECODER))
    comp = rec["compression"]
    assert comp["steps"] == ["sparsegpt", "gptq"] and comp["wbits"] == 4
    assert comp["linear_sparsity"] >= 0.5  # pruned weights stayed zero through quantization
    dense = RecordStore(results).load(rec["dense_id"])
    assert _ppl(dense) < _ppl(rec) < 1.2 * _ppl(dense)


def test_table5_holds_reported_and_reproduced_rows(results, tmp_path):
    # the 8-bit records of the test above (reused: same configs), or made here when run alone
    mine = [run(base_config(results, method=m, **{"method.wbits": 8}, **DECODER)) for m in ("rtn", "gptq")]
    records = [*mine, RecordStore(results).load(mine[0]["dense_id"])]
    csv, _, _ = write(TABLES["table5"], build_table(TABLES["table5"], records, include_partial=True), tmp_path)
    table = pd.read_csv(csv)
    assert (table["source"] == "reported").sum() == 14
    repro = table[table["source"] == "reproduced"]
    assert sorted(repro["record"]) == sorted(r["id"] for r in mine) and set(repro["plm"]) == {"tiny-llama-wt2"}
    assert repro["record"].notna().all() and repro["bits"].str.startswith("W").all()
