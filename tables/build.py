"""Survey tables from run records: the reported rows (tables/reported/*.csv, transcribed from the
survey) beside the reproduced rows, with Δ where model, method and rate match, and the
provenance of every reproduced number. Writes CSV and booktabs LaTeX."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd

REPORTED_DIR = Path(__file__).resolve().parent / "reported"


@dataclass(frozen=True)
class MethodRow:
    label: str
    ref: str
    cost: str = "low"
    uniform: str = ""  # UQ / NUQ for quantization rows


# How a registered method appears in the survey's tables (label, survey reference number).
PRUNING_DECODER = {
    "magnitude": MethodRow("Magnitude", ""),
    "wanda": MethodRow("Wanda", "163"),
    "sparsegpt": MethodRow("SparseGPT", "40"),
    "owl_wanda": MethodRow("Wanda+OWL", "129"),
    "owl_sparsegpt": MethodRow("SparseGPT+OWL", "129"),
    "llm_pruner": MethodRow("LLM-Pruner", "105"),
    "block_drop": MethodRow("Block drop (BI)", ""),
}


QUANT_DECODER = {
    "rtn": MethodRow("RTN", "", uniform="UQ"),
    "gptq": MethodRow("OPTQ", "42", uniform="UQ"),
    "awq": MethodRow("AWQ", "95", uniform="UQ"),
    "smoothquant": MethodRow("SmoothQuant", "157", uniform="UQ"),
    "owq": MethodRow("OWQ", "86", uniform="UQ"),
    "spqr": MethodRow("SpQR", "35", uniform="UQ"),
    "squeezellm": MethodRow("SqueezeLLM", "71", uniform="NUQ"),
    "zeroquant": MethodRow("ZeroQuant", "160", uniform="UQ"),
    "nf4": MethodRow("NF4", "34", uniform="NUQ"),
}


@dataclass(frozen=True)
class TableSpec:
    key: str
    reported: str
    caption: str
    methods: dict[str, MethodRow]
    reproduce: Callable[[dict, dict[str, dict], dict[str, MethodRow]], dict | None]
    kind_column: str = "granularity"  # the 4th LaTeX column: granularity (pruning) or uniform (quant)


def _ppl(record: dict | None, ds: str) -> float | None:
    if not record or ds not in record.get("metrics", {}):
        return None
    return record["metrics"][ds]["ppl"]


def _granularity(record: dict) -> str:
    comp = record["compression"]
    if comp.get("structured"):
        return "L" if "dropped_blocks" in comp else "N,H"
    pattern = comp.get("pattern", "unstructured")
    return "W" if pattern == "unstructured" else pattern


def _method_meta(method_cfg: dict, methods: dict[str, MethodRow]) -> MethodRow | None:
    """The row label of a method, or of a `compose` whose last step belongs to this table."""
    name = method_cfg["name"]
    if name == "llm_pruner" and method_cfg.get("importance") == "magnitude" and name in methods:
        return MethodRow("Magnitude (N,H)", "")
    if name != "compose":
        return methods.get(name)
    steps = [s["name"] for s in method_cfg["steps"]]
    if steps[-1] not in methods:
        return None
    every = {**PRUNING_DECODER, **QUANT_DECODER}
    last = methods[steps[-1]]
    return MethodRow("+".join(every[s].label if s in every else s for s in steps), last.ref, last.cost, last.uniform)


def _bits_label(comp: dict) -> str:
    if "wbits" not in comp:
        return ""
    return f"W{comp['wbits']}" + (f"A{comp['abits']}" if comp.get("abits") else "")


def _decoder_row(record: dict, by_id: dict[str, dict], methods: dict[str, MethodRow]) -> dict | None:
    if record.get("kind") != "compressed":
        return None
    meta = _method_meta(record["identity"]["method"], methods)
    if meta is None:
        return None
    dense = by_id.get(record.get("dense_id", ""))
    cfg = record["config"]
    wt2 = record["metrics"].get("wikitext2", {})
    calib = record["identity"].get("calib")
    notes = []
    if cfg["eval"].get("max_windows") is not None:
        notes.append(f"subset: first {wt2.get('windows')} windows")
    if calib:
        notes.append(f"calib {calib['source']}{':' + str(calib.get('path')) if calib.get('path') else ''}"
                     f" x{calib['nsamples']}")
    return {
        "source": "reproduced", "method": meta.label, "ref": meta.ref, "plm": cfg["model"]["name"],
        "granularity": _granularity(record), "uniform": meta.uniform, "cost": meta.cost,
        "bits": _bits_label(record["compression"]), "group_size": record["compression"].get("group_size"),
        "bits_per_weight": record["compression"].get("bits_per_weight"),
        "comp_rate": round(record["compression"]["comp_rate"], 4),
        "model_comp_rate": round(record["compression"]["model_comp_rate"], 4),
        "ppl_plm": _ppl(dense, "wikitext2"), "ppl_compressed": _ppl(record, "wikitext2"),
        "c4_ppl_plm": _ppl(dense, "c4"), "c4_ppl_compressed": _ppl(record, "c4"),
        "speedup": None, "seqlen": record["seqlen"], "hardware": record["hardware"]["name"],
        "record": record["id"], "flags": ";".join(record.get("flags", [])), "note": "; ".join(notes),
    }


TABLES = {
    "table3": TableSpec("table3", "table3_pruning_decoder.csv",
                        "Pruning of decoder-only models: WikiText-2 perplexity (reported vs reproduced).",
                        PRUNING_DECODER, _decoder_row),
    "table5": TableSpec("table5", "table5_quantization_decoder.csv",
                        "Quantization of decoder-only models: WikiText-2 perplexity (reported vs reproduced).",
                        QUANT_DECODER, _decoder_row, kind_column="uniform"),
}


def reported(spec: TableSpec) -> pd.DataFrame:
    df = pd.read_csv(REPORTED_DIR / spec.reported, dtype={"ref": str})
    df.insert(0, "source", "reported")
    return df


def _delta(row: dict, rep: pd.DataFrame, kind_column: str) -> float | None:
    """Reproduced minus reported perplexity where method, model, granularity (or uniformity)
    and rate match."""
    if row["flags"] or row["note"].startswith("subset") or row["ppl_compressed"] is None:
        return None
    same = rep[(rep["method"] == row["method"]) & (rep["plm"] == row["plm"])
               & (rep[kind_column] == row[kind_column])
               & ((rep["comp_rate"] - row["comp_rate"]).abs() < 5e-3)]
    if same.empty:
        return None
    return float(row["ppl_compressed"] - same.iloc[0]["ppl_compressed"])


def build(spec: TableSpec, records: Iterable[dict]) -> pd.DataFrame:
    records = list(records)
    by_id = {r["id"]: r for r in records}
    rep = reported(spec)
    rows = [row for r in records if (row := spec.reproduce(r, by_id, spec.methods)) is not None]
    for row in rows:
        row["delta_ppl"] = _delta(row, rep, spec.kind_column)
    extra = ["delta_ppl", "model_comp_rate"] + (["bits", "group_size", "bits_per_weight"] if spec.kind_column == "uniform"
                                                 else []) + ["c4_ppl_plm", "c4_ppl_compressed", "seqlen", "hardware",
                                                             "record", "flags"]
    repro = pd.DataFrame(rows, columns=list(rep.columns) + extra)
    if not repro.empty:
        repro = repro.sort_values(["plm", spec.kind_column, "comp_rate", "method", "record"], kind="stable")
    return pd.concat([rep, repro.astype(object)], ignore_index=True) if not repro.empty else rep


# ---------------------------------------------------------------------------------------------
# LaTeX
# ---------------------------------------------------------------------------------------------

_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(c, c) for c in text)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""


def _cell(key: str, value: Any, digits: int | None) -> str:
    if _missing(value):
        return "--"
    if key == "ref":
        return f"[{latex_escape(str(value))}]"
    if digits is not None:
        value = float(value)
        return f"{value:.1e}" if abs(value) >= 1e4 else f"{value:.{digits}f}"
    return latex_escape(str(value))


def to_latex(spec: TableSpec, df: pd.DataFrame) -> str:
    cols = [("Method", "method", None), ("Ref.", "ref", None), ("PLM", "plm", None),
            ("Gran." if spec.kind_column == "granularity" else "Uniform", spec.kind_column, None),
            ("Rate", "comp_rate", 3), ("PPL (PLM)", "ppl_plm", 2),
            ("PPL (comp.)", "ppl_compressed", 2), ("$\\Delta$", "delta_ppl", 2), ("Speedup", "speedup", 2),
            ("Record", "record", None)]
    head = " & ".join(h if h.startswith("$") else latex_escape(h) for h, _, _ in cols) + r" \\"
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             rf"\caption{{{latex_escape(spec.caption)}}}", rf"\label{{tab:{spec.key}}}",
             r"\begin{tabular}{" + "l" * 4 + "r" * 5 + "l}", r"\toprule", head]
    for source in ("reported", "reproduced"):
        part = df[df["source"] == source]
        if part.empty:
            continue
        lines += [r"\midrule", rf"\multicolumn{{{len(cols)}}}{{l}}{{\emph{{{source}}}}} \\"]
        for _, row in part.iterrows():
            cells = [_cell(key, row.get(key), digits) for _, key, digits in cols]
            if source == "reproduced" and isinstance(row.get("flags"), str) and row["flags"]:
                cells[6] += r"$^\dagger$"
            lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}",
              r"\par\footnotesize Reproduced rows: rate = zero fraction of the compressed linears; "
              r"$\dagger$ = flagged (non-finite or $>10^4$ perplexity); Record = results/runs/<id>.json.",
              r"\end{table}"]
    return "\n".join(lines) + "\n"


def write(spec: TableSpec, df: pd.DataFrame, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    csv, tex = out_dir / f"{spec.key}.csv", out_dir / f"{spec.key}.tex"
    df.to_csv(csv, index=False)
    tex.write_text(to_latex(spec, df))
    return csv, tex
