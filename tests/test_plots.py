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


# --- readability (issue 31): windows, ticks, legends, styles, outliers, references, titles ---

import colorsys  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from tables.plots import PALETTE, RATE, SPEEDUP, render  # noqa: E402


def _decoder_rows(points: list[tuple], source: str = "reproduced", plm: str = "tiny-llama-wt2") -> pd.DataFrame:
    """Table-3 rows: (method, rate, perplexity[, speedup]) on one model whose dense perplexity is 10."""
    return pd.DataFrame([{"source": source, "method": p[0], "plm": plm, "granularity": "W", "comp_rate": p[1],
                          "ppl_plm": 10.0, "ppl_compressed": p[2], "speedup": p[3] if len(p) > 3 else None,
                          "speedup_device": "AMD EPYC (CPU)" if len(p) > 3 else None,
                          "hardware": "AMD EPYC" if source == "reproduced" else None, "partial": ""}
                         for p in points])


def _axes(spec_key: str, df: pd.DataFrame, axis=RATE):
    fig, result = render(TABLES[spec_key], df, axis, "t")
    fig.canvas.draw()
    return fig, {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}


@pytest.fixture(scope="module")
def table3():
    return build_table(TABLES["table3"], gather(ROOT / "results" / "tiny-llama-wt2"))


@pytest.fixture(scope="module")
def table2_partial():
    return build_table(TABLES["table2"], gather(ROOT / "results" / "minilm-l6"), include_partial=True)


def test_every_legend_stands_beside_its_panel_not_over_it(table3, table2_partial):
    for key, df in (("table3", table3), ("table2", table2_partial)):
        fig, axes = _axes(key, df)
        renderer = fig.canvas.get_renderer()
        for title, ax in axes.items():
            assert ax.get_legend().get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1, title
        plt.close(fig)


def test_twenty_methods_get_twenty_distinct_strong_styles():
    df = _decoder_rows([(f"M{i}", 0.5, 11.0 + i / 10) for i in range(20)])
    fig, axes = _axes("table3", df)
    (ax,) = axes.values()
    lines = [line for line in ax.get_lines() if line.get_label().startswith("M")]
    pairs = {(line.get_color(), line.get_marker()) for line in lines}
    assert len(lines) == 20 and len(pairs) == 20
    colours = {line.get_color() for line in lines}
    assert len(colours) == len(PALETTE) == 10
    assert all(colorsys.rgb_to_hls(*to_rgb(c))[1] < 0.7 for c in colours)      # strong colours: no pastel (light) ones
    plt.close(fig)


def test_an_outlier_is_drawn_at_the_edge_with_an_arrow_and_its_value(table3):
    simple = float(pd.to_numeric(table3.loc[(table3["source"] == "reproduced") & (table3["method"] == "SIMPLE"),
                                            "ppl_compressed"]).iloc[0])
    fig, axes = _axes("table3", table3)
    ax = next(a for t, a in axes.items() if t.startswith("tiny-llama-wt2 (reproduced)"))
    lo, hi = ax.get_ylim()
    assert hi < simple / 2                     # the panel is not stretched to it ...
    line = next(line for line in ax.get_lines() if line.get_label() == "SIMPLE")
    assert all(lo <= y <= hi for y in line.get_ydata())            # ... it stands inside, at the top
    marks = [t for t in ax.texts if t.get_text() == f"{simple:.4g}"]
    assert marks and any(t.arrow_patch is not None for t in ax.texts)
    plt.close(fig)


def test_a_close_point_is_not_clipped():
    # 45 is 4.5× the dense 10 (below OUTLIER_FACTOR): drawn where it is
    fig, axes = _axes("table3", _decoder_rows([("A", 0.5, 11.0), ("B", 0.6, 12.0), ("C", 0.7, 45.0)]))
    (ax,) = axes.values()
    assert ax.get_ylim()[1] > 45 and not ax.texts
    plt.close(fig)


def test_every_panel_has_its_reference_line(table3, table2_partial):
    for key, df, label in (("table3", table3, "dense"), ("table2", table2_partial, "fine-tuned model")):
        fig, axes = _axes(key, df)
        for title, ax in axes.items():
            refs = [line for line in ax.get_lines() if line.get_label().startswith(label)]
            assert refs, title
            if key == "table2":
                assert refs[0].get_ydata()[0] == 0 and "Δ = 0" in refs[0].get_label()
        plt.close(fig)
    fig, axes = _axes("table3", table3)
    repro = next(a for t, a in axes.items() if t.startswith("tiny-llama-wt2 (reproduced)"))
    dense = float(pd.to_numeric(table3["ppl_plm"]).iloc[-1])
    assert any(line.get_label() == f"dense: {round(dense, 2):g}" for line in repro.get_lines())
    plt.close(fig)


def test_the_encoder_reference_names_the_fine_tuned_score_where_rows_carry_it():
    rows = pd.DataFrame([{"source": "reproduced", "method": "M", "plm": "minilm-l6", "granularity": "W",
                          "comp_rate": 0.5, "mnli": None, "qqp": None, "squad": -3.0, "avg": -3.0,
                          "baseline": "SQuAD: F1 87.10", "hardware": "AMD EPYC", "partial": ""}])
    fig, axes = _axes("table2", rows)
    (ax,) = axes.values()
    assert any(line.get_label() == "fine-tuned model: F1 87.10 (Δ = 0)" for line in ax.get_lines())
    assert ax.get_ylabel() == "Δ F1 on SQuAD (%p)"
    plt.close(fig)
    fig, axes = _axes("table2", rows.drop(columns="baseline"))
    (ax,) = axes.values()
    assert any(line.get_label() == "fine-tuned model (Δ = 0)" for line in ax.get_lines())
    plt.close(fig)


def test_a_panel_with_one_point_gets_a_padded_window():
    df = _decoder_rows([("OWQ", 0.806, 9.31)], source="reported", plm="opt-66b").assign(ppl_plm=9.34)
    fig, axes = _axes("table3", df)
    (ax,) = axes.values()
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    assert x1 - x0 >= 0.1 and y1 - y0 >= 0.05 * 9.34
    assert x0 + 0.03 < 0.806 < x1 - 0.03 and y0 < 9.31 < 9.34 < y1
    plt.close(fig)


def test_a_log_speedup_axis_labels_several_ticks():
    fig, axes = _axes("table3", _decoder_rows([("A", 0.5, 11.0, 1.03)]), SPEEDUP)
    (ax,) = axes.values()
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert len(labels) >= 3 and "1×" in labels and {"0.5×", "2×"} <= set(labels)
    assert all(ax.get_xlim()[0] <= t <= ax.get_xlim()[1] for t in ax.get_xticks())
    plt.close(fig)


def test_titles_and_y_labels_name_model_task_and_device(table3, table2_partial):
    fig, axes = _axes("table3", table3, SPEEDUP)
    title = next(t for t in axes if t.startswith("tiny-llama-wt2 (reproduced)"))
    assert "WikiText-2 perplexity" in title and "AMD EPYC (CPU)" in title
    assert all(ax.get_ylabel().startswith("WikiText-2 perplexity") for ax in axes.values())
    plt.close(fig)
    fig, axes = _axes("table2", table2_partial)
    title, ax = next((t, a) for t, a in axes.items() if t.startswith("minilm-l6 (reproduced)"))
    assert "SQuAD" in title and "AMD EPYC" in title
    assert ax.get_ylabel().startswith("Δ") and "SQuAD" in ax.get_ylabel() and ax.get_ylabel().endswith("(%p)")
    reported = axes[next(t for t in axes if t.startswith("bert-base (reported)"))]
    assert reported.get_ylabel() == "Avg Δ over MNLI, QQP, SQuAD (%p)"
    plt.close(fig)


def test_partial_protocol_lines_are_dashed(table2_partial):
    from tables.plots import PARTIAL
    fig, axes = _axes("table2", table2_partial)
    ax = next(a for t, a in axes.items() if t.startswith("minilm-l6 (reproduced)"))
    partial = [line for line in ax.get_lines() if line.get_label().endswith(PARTIAL)]
    assert partial and all(line.get_linestyle() == "--" for line in partial)
    plt.close(fig)


def test_a_figure_drawn_twice_is_the_same_file(tmp_path):
    df = _decoder_rows([("A", 0.5, 11.0, 1.2), ("B", 0.7, 90.0, 1.5)])
    first = plot_table(TABLES["table3"], df, tmp_path / "a", ["pdf", "png"])
    again = plot_table(TABLES["table3"], df, tmp_path / "b", ["pdf", "png"])
    for f, g in zip([p for fig in first for p in fig.paths], [p for fig in again for p in fig.paths]):
        assert f.read_bytes() == g.read_bytes(), f.name
