"""scripts/plots.py's figures: one line per method present, reported and reproduced panels apart,
non-empty PNG files."""
from __future__ import annotations

from conftest import ROOT
from tables.build import TABLES, build_table, gather
from tables.plots import plot_table


def test_rate_and_speedup_figures_draw_every_reproduced_method(tmp_path):
    records = gather(ROOT / "results" / "tiny-llama-wt2")
    df = build_table(TABLES["table5"], records)
    figs = plot_table(TABLES["table5"], df, tmp_path, ["png"])
    assert [f.paths[0].name for f in figs] == ["table5_rate.png", "table5_speedup.png"]
    for f in figs:
        data = f.paths[0].read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    rate = figs[0].panels
    repro = df[df["source"] == "reproduced"]
    # one line per method of the records (a method appears under UQ or NUQ only here: no split)
    assert sorted(rate["tiny-llama-wt2 (reproduced)"]) == sorted(set(repro["method"]))
    reported = df[df["source"] == "reported"]
    assert set(rate) == {"tiny-llama-wt2 (reproduced)"} | {f"{p} (reported)" for p in set(reported["plm"])}
    timed = repro[repro["speedup"].notna()]
    assert sorted(figs[1].panels.get("tiny-llama-wt2 (reproduced)", [])) == sorted(set(timed["method"]))


def test_a_method_at_two_patterns_draws_two_lines(tmp_path):
    records = gather(ROOT / "results" / "tiny-llama-wt2")
    df = build_table(TABLES["table3"], records)
    panels = plot_table(TABLES["table3"], df, tmp_path, ["png"])[0].panels
    lines = panels["tiny-llama-wt2 (reproduced)"]
    assert {"SparseGPT (2:4)", "SparseGPT (4:8)", "SparseGPT (W)"} <= set(lines) and "SparseGPT" not in lines


def test_partial_protocol_records_are_drawn_only_when_asked_and_then_marked(tmp_path):
    from tables.plots import PARTIAL
    records = gather(ROOT / "results" / "minilm-l6")          # 1,000 of the 5,173 questions: partial
    assert "minilm-l6 (reproduced)" not in plot_table(TABLES["table2"], build_table(TABLES["table2"], records),
                                                      tmp_path / "a", ["png"])[0].panels
    panels = plot_table(TABLES["table2"], build_table(TABLES["table2"], records, include_partial=True),
                        tmp_path / "b", ["png"])[0].panels
    lines = panels["minilm-l6 (reproduced)"]
    assert lines and all(line.endswith(PARTIAL) for line in lines)
