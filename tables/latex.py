"""The LaTeX of a built table (tables/build.py), for a paper to `\\input` as it is.

`<key>.tex` fits one column of an article (\\footnotesize, narrow column spacing, a short record
key); `<key>_wide.tex` spans both columns of a two-column paper (`table*`, full record ids and
speedup spreads, shrunk to the text width only where it is wider). Both need booktabs and
graphicx. The survey's rows and each reproduced model stand in their own labelled block under a
rule; a reproduced block's heading names its model and the dense baseline its Δ is taken
against. The footnote says, per table, how each rate is counted (keyed per row where rows
differ), where and how speedups were measured, and where each record lies.

Every number is rounded half up from its decimal value, so a rate of 0.8125 and the survey's
0.813 print alike."""
from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pandas as pd

from tables.build import SURVEY_TASKS, TableSpec, added_task_columns

SHORT_ID = 6   # the fewest hex digits of a record id in the one-column table's key (more where they are not unique)
METHOD_WIDTH = "7.8em"   # the one-column table's Method column wraps beyond this

_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}", "<": r"\textless{}",
            ">": r"\textgreater{}", "≈": r"$\approx$", "Δ": r"$\Delta$", "−": r"$-$", "×": r"$\times$",
            "–": "--", "—": "---", "…": r"\dots{}", "≤": r"$\leq$", "≥": r"$\geq$", "·": r"$\cdot$"}


def latex_escape(text: str) -> str:
    """`text` with every character LaTeX treats specially (and the non-ASCII ones used here) spelled out."""
    return "".join(_ESCAPES.get(c, c) for c in text)


def missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""


def number(value: Any, digits: int) -> str:
    """`value` rounded half up to `digits` decimals from its shortest decimal spelling; a minus sign
    as in math; 1e4 and above in scientific notation."""
    v = float(value)
    if abs(v) >= 1e4:
        text = f"{v:.1e}"
    else:
        text = str(Decimal(repr(v)).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))
    return "$-$" + text[1:] if text.startswith("-") else text


@dataclass(frozen=True)
class Column:
    header: str          # plain text; " (" and ", " inside it start new header lines
    key: str
    digits: int | None = None
    variants: tuple[str, ...] = ()   # columns shown in this one where it is empty (the one-column table)

    def head(self) -> str:
        if self.header.startswith("$"):
            return self.header
        first, sep, rest = self.header.partition(" (")
        if not sep:
            return latex_escape(self.header)
        parts = ("(" + rest).split(", ")
        lines = [first, *(p + "," for p in parts[:-1]), parts[-1]]
        return r"\shortstack{" + r"\\".join(latex_escape(x) for x in lines) + "}"


def columns(spec: TableSpec, df: pd.DataFrame, wide: bool) -> list[Column]:
    """The table's columns. In the one-column table a task variant's scores (squad_dev_split) stand
    in the column of the survey task they vary (SQuAD), and their block's heading names the variant."""
    if spec.encoder:
        describe = spec.describe or (("PLM", "plm"), ("Gran." if spec.kind_column == "granularity" else "Unif.",
                                                       spec.kind_column))
        slots = {} if wide else slotted(df)
        tasks = [Column(h, k, 2, tuple(v for v, s in slots.items() if s == k)) for k, h in SURVEY_TASKS]
        tasks += [Column(h, k, 2) for k, h in added_task_columns(df) if k not in slots]
        return [*_method(wide), *(Column(h, k) for h, k in describe),
                Column("Rate", "comp_rate", 3), *tasks,
                Column("Avg", "avg", 2), Column("Speedup", "speedup", 2), Column("Rec.", "record")]
    return [*_method(wide), Column("PLM", "plm"),
            Column("Gran." if spec.kind_column == "granularity" else "Unif.", spec.kind_column),
            Column("Rate", "comp_rate", 3), Column("PPL (dense)", "ppl_plm", 2),
            Column("PPL (comp.)", "ppl_compressed", 2), Column(r"$\Delta$", "delta_ppl", 2),
            Column("Speedup", "speedup", 2), Column("Rec.", "record")]


class Keys:
    """Footnote keys for the distinct texts of one kind (rate bases, devices): none where all rows
    share one text, which the footnote then states once."""

    def __init__(self, texts: list[str], symbols: str):
        self.texts = list(dict.fromkeys(t for t in texts if t))
        self.symbols = {t: symbols[i] for i, t in enumerate(self.texts)} if len(self.texts) > 1 else {}

    def mark(self, text: Any) -> str:
        return rf"\textsuperscript{{{self.symbols[text]}}}" if isinstance(text, str) and text in self.symbols else ""

    def legend(self) -> str:
        if len(self.texts) == 1:
            return latex_escape(self.texts[0])
        return "; ".join(rf"\textsuperscript{{{self.symbols[t]}}}\,{latex_escape(t)}" for t in self.texts)


def _breakable(name: str) -> str:
    """A method name that may wrap after its "+" (SparseGPT+OPTQ)."""
    return name.replace("+", r"+\allowbreak{}")


def _text(row: pd.Series, key: str) -> str:
    value = row.get(key)
    return value if isinstance(value, str) else ""


def id_digits(df: pd.DataFrame) -> int:
    """The fewest leading hex digits (at least SHORT_ID) that tell the table's records apart."""
    ids = {i for v in df.get("record", pd.Series(dtype=object)).dropna() for i in str(v).split(";") if i}
    n = SHORT_ID
    while len({i[:n] for i in ids}) < len(ids):
        n += 1
    return n


def _record_cell(row: pd.Series, digits: int | None) -> str:
    ids = [i for i in _text(row, "record").split(";") if i]
    return r"\texttt{" + ",".join(i[:digits] for i in ids) + "}" if ids else "--"


def _speedup_cell(row: pd.Series, devices: Keys, wide: bool) -> str:
    if missing(row.get("speedup")):
        return "--"
    if row["source"] != "reproduced":
        return number(row["speedup"], 2)
    cell = r"$\approx$1" if row.get("speedup_claim") == "≈1" else number(row["speedup"], 2)
    if wide and not missing(row.get("speedup_q1")):
        cell += rf" {{\scriptsize[{number(row['speedup_q1'], 2)}, {number(row['speedup_q3'], 2)}]}}"
    return cell + devices.mark(row.get("speedup_device"))


def _method(wide: bool) -> list[Column]:
    """Method and reference: two columns, or (one-column table) one, the reference after the name."""
    return [Column("Method", "method"), Column("Ref.", "ref")] if wide else [Column("Method [Ref.]", "method")]


def slotted(df: pd.DataFrame) -> dict[str, str]:
    """{variant column: survey column} of the table (known where it was built in this process)."""
    return {k: s for k, s in df.attrs.get("task_slots", {}).items() if k in df.columns}


def _cells(row: pd.Series, cols: list[Column], rates: Keys, devices: Keys, wide: bool, digits: int | None) -> list[str]:
    out = []
    for col in cols:
        value = row.get(col.key)
        for variant in col.variants:
            value = row.get(variant) if missing(value) else value
        if col.key == "record":
            cell = _record_cell(row, digits) if row["source"] == "reproduced" else "--"
        elif col.key == "speedup":
            cell = _speedup_cell(row, devices, wide)
        elif missing(value):
            cell = "--"
        elif col.key == "ref":
            cell = f"[{latex_escape(str(value))}]"
        elif col.key == "method" and not wide:
            cell = _breakable(latex_escape(str(value))) + ("" if missing(row.get("ref")) else f" [{latex_escape(str(row['ref']))}]")
        elif col.digits is not None:
            cell = number(value, col.digits)
        else:
            cell = latex_escape(str(value))
        if col.key == "method" and row["source"] == "reproduced" and not missing(row.get("seed")) and int(row["seed"]):
            cell += f", seed {int(row['seed'])}"     # another draw of the calibration sample
        if col.key == "method" and _text(row, "partial"):
            cell += r"$^\ast$"
        if col.key == "comp_rate" and row["source"] == "reproduced":
            cell += rates.mark(row.get("rate_counted_as"))
        if col.key == "ppl_compressed" and _text(row, "flags"):
            cell += r"$^\dagger$"
        out.append(cell)
    return out


def _groups(spec: TableSpec, df: pd.DataFrame, cols: list[Column]) -> list[tuple[list[str], pd.DataFrame]]:
    """(heading lines, rows) per block: the survey's rows, then one block per reproduced model and baseline."""
    out = []
    rep = df[df["source"] == "reported"]
    if not rep.empty:
        out.append((["Reported in the survey (each paper's own model and protocol)"], rep))
    repro = df[df["source"] == "reproduced"]
    if repro.empty:
        return out
    if spec.encoder:
        keys = [(_text(r, "plm"), _text(r, "baseline")) for _, r in repro.iterrows()]
        for plm, base in dict.fromkeys(keys):
            rows = repro[[k == (plm, base) for k in keys]]
            headers = df.attrs.get("task_headers", {})
            shown = [f"{c.header} column: {headers.get(v, v)}" for c in cols for v in c.variants if rows[v].notna().any()]
            out.append(([f"Reproduced on {plm}", *shown] + ([f"fine-tuned model: {base}"] if base else []), rows))
        return out
    dense = [None if missing(r.get("ppl_plm")) else number(r["ppl_plm"], 2) for _, r in repro.iterrows()]
    keys = list(zip(repro["plm"].astype(str), dense))
    for plm, ppl in dict.fromkeys(keys):
        rows = repro[[k == (plm, ppl) for k in keys]]
        out.append(([f"Reproduced on {plm}: WikiText-2" + (f", dense PPL {ppl}" if ppl else "")], rows))
    return out


def _footnote(spec: TableSpec, df: pd.DataFrame, rates: Keys, devices: Keys, digits: int | None) -> str:
    repro = df[df["source"] == "reproduced"]
    parts = ["Reported rows: the survey's figures, each from its paper's own model and protocol."]
    if spec.encoder:
        parts.append(r"Task columns: difference (\%p) to the row's fine-tuned model (a reproduced block's "
                     r"heading gives that model's score); Avg: over MNLI, QQP and SQuAD where present "
                     r"(a variant's column is not averaged).")
    else:
        parts.append(r"$\Delta$ = compressed $-$ dense perplexity of the same row.")
    if repro.empty:
        return FOOTNOTE + " ".join(parts)
    if rates.texts:
        parts.append(f"Rate of reproduced rows: {rates.legend()}.")
    parts.append("Speedup of reproduced rows: the median of interleaved passes against the dense model in the "
                 r"same process, $\approx$1 where their interquartile range includes 1"
                 + (", [quartiles] beside it" if digits is None else "")
                 + (f"; measured on {devices.legend()}" if devices.texts else "") + ".")
    sets = list(dict.fromkeys(s for v in repro.get("record_set", pd.Series(dtype=object)).dropna()
                              for s in str(v).split(";") if s))
    where = " or ".join(r"\texttt{" + latex_escape(f"{s}/runs/") + "}" for s in sets) or r"\texttt{runs/}"
    parts.append(("Rec.: the record's id" if digits is None else
                  f"Rec.: the first {digits} hex digits of the record's id (the wide table gives all 16)")
                 + f"; the record is {where}" + latex_escape("<id>.json") + ".")
    protocols = list(dict.fromkeys(p for v in repro["protocol"].dropna() for p in str(v).split("; ") if p))
    if protocols:
        parts.append("Protocol: " + "; ".join(latex_escape(p) for p in protocols) + ".")
    if repro.get("partial", pd.Series(dtype=object)).fillna("").astype(str).ne("").any():
        parts.append(r"$^\ast$ = partial protocol (what was cut: CSV column \texttt{partial}).")
    if not spec.encoder and repro.get("flags", pd.Series(dtype=object)).fillna("").astype(str).ne("").any():
        parts.append(r"$\dagger$ = flagged (non-finite or $>10^4$ perplexity).")
    parts.append("-- = not reported or not measured.")
    return FOOTNOTE + " ".join(parts)


FOOTNOTE = r"\par\smallskip\raggedright\scriptsize "


def to_latex(spec: TableSpec, df: pd.DataFrame, wide: bool = False) -> str:
    """The table as LaTeX: one column of an article, or (`wide`) spanning both columns of a
    two-column one."""
    cols = columns(spec, df, wide)
    digits = None if wide else id_digits(df)
    repro = df[df["source"] == "reproduced"]
    rates = Keys([_text(r, "rate_counted_as") for _, r in repro.iterrows()], "abcdefghij")
    devices = Keys([_text(r, "speedup_device") for _, r in repro.iterrows() if not missing(r.get("speedup"))],
                   "ABCDEFGHIJ")
    n = len(cols)
    align = "@{}" + "".join(("r" if c.digits is not None or c.key == "speedup" else "l") if c.key != "method" or wide
                            else rf">{{\raggedright\arraybackslash}}p{{{METHOD_WIDTH}}}" for c in cols) + "@{}"
    env = "table*" if wide else "table"
    lines = ["% needs \\usepackage{booktabs,graphicx,array}", rf"\begin{{{env}}}[t]", r"\centering",
             r"\small" if wide else r"\scriptsize", r"\setlength{\tabcolsep}{3pt}" if wide else r"\setlength{\tabcolsep}{2pt}",
             rf"\caption{{{latex_escape(spec.caption)}}}", rf"\label{{tab:{spec.key}{'-wide' if wide else ''}}}"]
    if wide:
        lines.append(r"\resizebox{\ifdim\width>\textwidth\textwidth\else\width\fi}{!}{%")
    lines += [rf"\begin{{tabular}}{{{align}}}", r"\toprule", " & ".join(c.head() for c in cols) + r" \\"]
    for heading, rows in _groups(spec, df, cols):
        lines += [r"\midrule", rf"\multicolumn{{{n}}}{{@{{}}l}}{{\textbf{{{latex_escape(heading[0])}}}}} \\"]
        lines += [rf"\multicolumn{{{n}}}{{@{{}}l}}{{\emph{{{latex_escape(h)}}}}} \\" for h in heading[1:]]
        lines += [" & ".join(_cells(row, cols, rates, devices, wide, digits)) + r" \\" for _, row in rows.iterrows()]
    lines += [r"\bottomrule", r"\end{tabular}" + ("}" if wide else ""), _footnote(spec, df, rates, devices, digits),
              rf"\end{{{env}}}"]
    return "\n".join(lines) + "\n"
