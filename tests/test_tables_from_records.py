"""Tables, plots and verdicts show only what records hold: built with methods/ and kernels/ not
importable, Speedup cells only from a record's own measurement with its spread, and partial-
protocol records out of every paper output unless asked for, then marked."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT

PUBLISHED = ["results/tiny-llama-wt2", "results/minilm-l6"]


def _build(out: Path, block: bool) -> None:
    code = f"""
import sys
{"sys.modules['methods'] = None; sys.modules['kernels'] = None" if block else ""}
sys.path.insert(0, {str(ROOT)!r})
from pathlib import Path
from tables.build import TABLES, built_tables
from tables.files import write
for key, df in built_tables(list(TABLES), {str(out / "none")!r}, {PUBLISHED!r}, include_partial=True).items():
    write(TABLES[key], df, Path({str(out)!r}))
assert ('methods' in sys.modules and sys.modules['methods'] is None) == {block}
"""
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True)


def test_tables_build_without_methods_or_kernels_importable_and_the_same(tmp_path):
    _build(tmp_path / "blocked", block=True)
    _build(tmp_path / "normal", block=False)
    files = sorted(p.name for p in (tmp_path / "normal").iterdir() if p.is_file())
    assert len(files) == 18      # six tables: CSV, one-column and wide LaTeX
    for name in files:
        assert (tmp_path / "blocked" / name).read_bytes() == (tmp_path / "normal" / name).read_bytes(), name


def test_no_speedup_cell_comes_from_a_benchmark_file_and_each_has_a_spread():
    from tables.build import TABLES, built_tables, gather
    records = {r["id"]: r for r in gather(ROOT / "results" / "none", [ROOT / p for p in PUBLISHED])}
    cells = 0
    for key, df in built_tables(list(TABLES), ROOT / "results" / "none", [ROOT / p for p in PUBLISHED],
                                include_partial=True).items():
        repro = df[(df["source"] == "reproduced") & df["speedup"].notna()]
        for _, row in repro.iterrows():
            cells += 1
            assert row["speedup_basis"].startswith("own run") and "bench" not in row["speedup_basis"], row["speedup_basis"]
            rec = records[row["record"].split(";")[0]]
            s = rec.get("speedup") or rec["kernels"]["speedup"]
            assert s["q1"] <= s["median"] <= s["q3"] and len(s["ratios"]) == s["repeats"] >= 3
            assert row["speedup_claim"] == ("≈1" if s["q1"] <= 1 <= s["q3"] else row["speedup_claim"])
    assert cells > 0


def test_a_record_without_the_table_fields_is_named_and_left_out():
    from tables.build import TABLES, build_table, unplaced
    rec = json.loads(next(p for p in sorted((ROOT / "results" / "tiny-llama-wt2" / "runs").glob("*.json"))
                          if json.loads(p.read_text())["kind"] == "compressed").read_text())
    old = {k: v for k, v in rec.items() if k != "rows"}
    assert [rid for rid, why in unplaced([old]) if "lacks rows" in why] == [rec["id"]]
    for spec in TABLES.values():
        table = build_table(spec, [old], include_partial=True)
        assert rec["id"] not in set(table.get("record", pd.Series(dtype=object)).dropna())


def test_speedup_cell_shows_about_one_where_the_spread_includes_one():
    from tables.speedups import speedup_of
    base = {"hardware": {"device": "cpu"}}
    s = {"median": 1.04, "q1": 0.97, "q3": 1.1, "repeats": 5, "ratios": [1] * 5, "device": "AMD EPYC", "dtype": "float32"}
    assert (speedup_of({**base, "speedup": s}).shown, speedup_of({**base, "speedup": s}).claim) == ("≈1", "≈1")
    faster = speedup_of({**base, "speedup": {**s, "q1": 1.02}})
    assert (faster.shown, faster.claim) == ("1.04", "faster")
    slower = speedup_of({**base, "speedup": {**s, "median": 0.8, "q1": 0.7, "q3": 0.9}})
    assert (slower.shown, slower.claim) == ("0.80", "slower")
    assert speedup_of({**base, "speedup": {"value": 1.5, "device": "AMD EPYC"}}) is None   # no spread, no cell


@pytest.mark.e2e
def test_a_four_window_run_is_out_of_the_tables_unless_asked_and_then_marked(shared_results):
    from conftest import base_config
    from eval.pipeline import run
    from tables.build import TABLES, build_table
    from tables.latex import to_latex
    from tables.verify import Checker

    rec = run(base_config(shared_results, method="magnitude", **{"eval.max_windows": 4}))
    assert rec["protocol"] == {"name": rec["protocol"]["name"], "complete": False, "partial": ["eval.max_windows=4"],
                               "column": None}
    spec = TABLES["table3"]
    assert rec["id"] not in set(build_table(spec, [rec]).get("record", pd.Series(dtype=object)).dropna())
    marked = build_table(spec, [rec], include_partial=True)
    row = marked[marked["record"] == rec["id"]].iloc[0]
    assert row["partial"] == "eval.max_windows=4" and pd.isna(row["delta_ppl"])
    assert r"Magnitude$^\ast$" in to_latex(spec, marked) and "partial protocol" in to_latex(spec, marked)
    ppl = rec["metrics"]["wikitext2"]["ppl"]
    claim = f"method=magnitude eval.max_windows=4 ppl={ppl}"
    assert Checker(shared_results).check_claim(claim).status == "partial"
    v = Checker(shared_results, include_partial=True).check_claim(claim)
    assert v.status == "partial" and v.reproduced["wikitext2"] == ppl and "within the tolerance" in v.why


@pytest.mark.e2e
def test_remeasure_replaces_a_record_by_its_rerun_with_the_kernel_stage(tmp_path):
    """A record set's speedups measured again: the rerun gives the same metrics digit for digit,
    with the kernel stage in its identity and its speedup's spread, and replaces the old record."""
    from conftest import DECODER, base_config
    from eval.pipeline import run
    from eval.records import RecordStore
    from tables.remeasure import remeasure

    old = run(base_config(tmp_path, method="top_drop", **DECODER))
    del old["config"]["method"]["preset"]        # as in a record of before presets named themselves
    RecordStore(tmp_path).write(old)
    out = remeasure(tmp_path, timing={"inputs": 2, "repeats": 3})
    new_id = out.replaced[old["id"]]
    store = RecordStore(tmp_path)
    new = store.load(new_id)
    assert not store.exists(old["id"]) and not out.differ
    assert new["metrics"] == old["metrics"] and new["identity"]["kernels"] == {"convert": True}
    assert new["preset"] == "top_drop" and new["identity"]["method"]["name"] == "block_drop"
    assert new["identity"]["timing"] == {"inputs": 2, "repeats": 3} and new["speedup"]["repeats"] == 3
    assert new["kernels"]["reason"].startswith("nothing to convert")       # smaller dense matrices: no kernel format
    assert out.cells[new_id].count("[") == 1


def test_remeasure_names_records_by_their_leading_digits_and_refuses_one_that_matches_nothing(tmp_path):
    """A record is named as the tables print it (its leading hex digits); a name that matches no
    record, or several, is one line of error before any run, never a silent no-op."""
    runs = tmp_path / "runs"
    runs.mkdir()
    for rid in ("53131ba8371dab06", "53131ba9aaaaaaaa", "c06f155518061ec0"):
        (runs / f"{rid}.json").write_text("{}")
    from eval.records import RecordStore
    assert RecordStore(tmp_path).resolve(["c06f1555", "53131ba8"]) == ["c06f155518061ec0", "53131ba8371dab06"]
    for name, why in (("ffff0000", "matches no record"), ("53131ba", "ambiguous")):
        with pytest.raises(ValueError, match=why):
            RecordStore(tmp_path).resolve([name])
        out = subprocess.run([sys.executable, "scripts/remeasure.py", f"set={tmp_path}", f"records=[{name}]"],
                             cwd=ROOT, capture_output=True, text=True)
        assert out.returncode != 0 and out.stderr.strip().count("\n") == 0 and why in out.stderr
    # an id of digits around an `e` reads as a float in Hydra's overrides: said, never resolved as 'inf'
    out = subprocess.run([sys.executable, "scripts/remeasure.py", f"set={tmp_path}", "records=[14e17572]"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode != 0 and out.stderr.strip().count("\n") == 0 and "quote" in out.stderr


@pytest.mark.e2e
def test_reseed_reruns_a_record_at_another_seed_changing_nothing_else(tmp_path):
    """The seeds a claim is judged on: the rerun's identity differs from the record's in the seed
    alone, its calibration sample is another draw, and a second call does no work."""
    from conftest import DECODER, base_config
    from eval.pipeline import run
    from eval.records import RecordStore
    from tables.remeasure import reseed

    old = run(base_config(tmp_path, method="wanda", **DECODER))
    out = reseed(tmp_path, [0, 1], records=[old["id"]])
    assert list(out) == [old["id"]] and list(out[old["id"]]) == [1]
    new = RecordStore(tmp_path).load(out[old["id"]][1])
    assert new["seed"] == 1 and new["preset"] == old["preset"]
    assert {k: v for k, v in new["identity"].items() if k != "seed"} == {k: v for k, v in old["identity"].items() if k != "seed"}
    assert new["metrics"] != old["metrics"]                     # another calibration sample, another result
    n = len(list((tmp_path / "runs").glob("*.json")))
    assert reseed(tmp_path, [1], records=[old["id"]]) == out and len(list((tmp_path / "runs").glob("*.json"))) == n
