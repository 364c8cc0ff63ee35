"""The tables' LaTeX is what a paper can `\\input` as it is: every published table fits one column
of an article (and its wide variant two), all text is escaped, numbers round alike, the survey's
rows and each reproduced model stand in labelled blocks, Δ is taken against the row's own dense
model, whose score the block names, and each row's rate says how it is counted."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT
from tables.build import TABLES, build_table, built_tables, gather
from tables.files import write
from tables.latex import number, to_latex

PUBLISHED = {"results/tiny-llama-wt2": ["table3", "table5"], "results/minilm-l6": ["table2", "table4", "table6", "table7"]}
MAX_OVERFULL_PT = 5.0


def _published(key: str) -> pd.DataFrame:
    folder = next(f for f, keys in PUBLISHED.items() if key in keys)
    return built_tables([key], ROOT / folder, [], include_partial=True)[key]


@pytest.fixture(scope="module")
def pdflatex() -> None:
    if shutil.which("pdflatex") is None:   # a real dependency of a tool that writes LaTeX: never skipped
        pytest.fail("pdflatex is missing: `make tex` installs it")


def test_every_published_table_fits_one_column_and_its_wide_variant_two_columns(pdflatex, tmp_path):
    from tables.typeset import typeset
    for folder, keys in PUBLISHED.items():
        for key, df in built_tables(keys, ROOT / folder, [], include_partial=True).items():
            _, tex, wide = write(TABLES[key], df, tmp_path / "tables")
            narrow = typeset(tex, tmp_path / "build")
            assert max(narrow.overfull_pt, default=0) <= MAX_OVERFULL_PT, (key, narrow.overfull_pt)
            spread = typeset(wide, tmp_path / "build", twocolumn=True)
            assert max(spread.overfull_pt, default=0) <= MAX_OVERFULL_PT, (key, "wide", spread.overfull_pt)


def test_text_with_latex_specials_is_escaped_and_compiles(pdflatex, tmp_path):
    from tables.typeset import typeset
    df = _published("table3")
    i = df.index[df["source"] == "reproduced"][0]
    df.loc[i, "method"] = "A_b & 50% #1 <x> ~y^z {w} \\v Δ≈"
    df.loc[i, "protocol"] = "windows < 512 & more_than_0%"
    for wide in (False, True):
        tex = to_latex(TABLES["table3"], df, wide=wide)
        assert r"A\_b \& 50\% \#1 \textless{}x\textgreater{} \textasciitilde{}y\^{}z \{w\} \textbackslash{}v" in tex
        assert "<id>" not in tex and "windows < 512" not in tex
        path = tmp_path / f"escaped{'_wide' if wide else ''}.tex"
        path.write_text(tex)
        typeset(path, tmp_path / "build", twocolumn=wide)


def test_numbers_round_half_up_from_their_decimal_value_in_every_row():
    assert [number(0.8125, 3), number(0.813, 3), number(0.8124, 3)] == ["0.813", "0.813", "0.812"]
    assert number(2.675, 2) == "2.68" and number(-0.005, 2) == "$-$0.01" and number(745.4, 2) == "745.40"
    tex = to_latex(TABLES["table5"], _published("table5"))
    assert "0.812" not in tex and "0.8125" not in tex and "0.813" in tex


def test_reported_and_reproduced_rows_are_separate_labelled_blocks():
    for key in ("table3", "table2"):
        tex = to_latex(TABLES[key], _published(key))
        blocks = re.findall(r"\\midrule\n\\multicolumn\{\d+\}\{@\{\}l\}\{\\textbf\{([^}]*)\}\}", tex)
        assert blocks[0].startswith("Reported in the survey") and blocks[1].startswith("Reproduced on")


def test_decoder_delta_is_against_the_rows_own_dense_model_named_in_its_block():
    df = _published("table3")
    repro = df[(df["source"] == "reproduced") & (df["partial"] == "") & (df["flags"] == "")]
    assert len(repro) > 5
    assert ((repro["delta_ppl"] - (repro["ppl_compressed"] - repro["ppl_plm"])).abs() < 1e-9).all()
    rep = df[df["source"] == "reported"]
    assert rep["delta_ppl"].notna().all()
    dense = repro["ppl_plm"].iloc[0]
    assert f"Reproduced on tiny-llama-wt2: WikiText-2, dense PPL {number(dense, 2)}" in to_latex(TABLES["table3"], df)


def test_a_task_variant_has_its_own_column_named_for_what_it_scored_and_no_average():
    df = _published("table2")
    repro = df[df["source"] == "reproduced"]
    assert repro["squad"].isna().all() and repro["avg"].isna().all() and repro["squad_dev_split"].notna().all()
    assert df.attrs["task_headers"]["squad_dev_split"] == "SQuAD (dev split, 1k)"
    dense = next(r for r in gather(ROOT / "results" / "minilm-l6") if r["kind"] == "dense")
    baseline = f"SQuAD (dev split, 1k) F1 {dense['headline']:.2f}"
    assert (repro["baseline"] == baseline).all()
    wide, narrow = to_latex(TABLES["table2"], df, wide=True), to_latex(TABLES["table2"], df)
    assert r"\shortstack{SQuAD\\(dev split,\\1k)}" in wide                       # its own column
    assert "SQuAD column: SQuAD (dev split, 1k)" in narrow and f"fine-tuned model: {baseline}" in narrow


def test_each_reproduced_rate_says_how_it_is_counted_with_its_own_bit_base():
    df = _published("table4")
    repro = df[df["source"] == "reproduced"]
    assert repro["rate_counted_as"].str.contains("32 bits").all()        # encoders count against fp32
    tex = to_latex(TABLES["table5"], _published("table5"))
    legend = dict(re.findall(r"\\textsuperscript\{([a-j])\}\\,([^;.]*)", tex))
    assert legend and all("16 bits" in text for text in legend.values())
    for line in tex.splitlines():
        if "tiny-llama-wt2 &" in line:
            mark = re.search(r"0\.\d{3}\\textsuperscript\{([a-j])\}", line)
            assert mark and mark.group(1) in legend, line


def test_record_ids_are_short_and_the_footnote_gives_the_real_path_of_their_set():
    df = _published("table5")
    tex, wide = to_latex(TABLES["table5"], df), to_latex(TABLES["table5"], df, wide=True)
    rid = df[df["source"] == "reproduced"]["record"].iloc[0]
    assert rf"\texttt{{{rid[:6]}}}" in tex and rf"\texttt{{{rid}}}" in wide
    assert r"\texttt{results/tiny-llama-wt2/runs/}\textless{}id\textgreater{}.json" in tex
    assert (ROOT / "results" / "tiny-llama-wt2" / "runs" / f"{rid}.json").is_file()


def test_a_table_without_reproduced_rows_still_renders():
    tex = to_latex(TABLES["table6"], build_table(TABLES["table6"], []))
    assert "Reported in the survey" in tex and "Reproduced" not in tex


def test_the_published_findings_typeset_in_one_column(pdflatex, tmp_path):
    from tables.typeset import typeset
    for folder in PUBLISHED:
        done = typeset(ROOT / folder / "tables" / "findings.tex", tmp_path)
        assert max(done.overfull_pt, default=0) <= MAX_OVERFULL_PT, (folder, done.overfull_pt)
