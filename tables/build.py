"""Survey tables from run records: the reported rows (tables/reported/*.csv, transcribed from the
survey) beside the reproduced rows, with Δ where model, method and rate match, and the
provenance of every reproduced number. Writes CSV and booktabs LaTeX."""
from __future__ import annotations

import json
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


PRUNING_ENCODER = {
    "magnitude": MethodRow("Magnitude", ""),
    "kwon": MethodRow("Kwon et al.", "81"),
    "kcm": MethodRow("KCM", "110"),
    "kprune": MethodRow("Kprune", "112"),
    "block_drop": MethodRow("Sajjad et al.", "120"),
}

QUANT_ENCODER = {
    "q8bert": MethodRow("Q8BERT", "169", uniform="UQ"),
    "gobo": MethodRow("GOBO", "168", uniform="NUQ"),
    "kmeans_quant": MethodRow("K-means Quant.", "175", uniform="NUQ"),
    "powerquant": MethodRow("PowerQuant", "167", uniform="NUQ"),
    "outlier_suppression": MethodRow("Outlier Suppression", "147", uniform="UQ"),
    "gptq": MethodRow("GPTQ", "42", uniform="UQ"),
    "rtn": MethodRow("RTN", "", uniform="UQ"),
}

ENCODER_COLUMNS = {"mnli": "mnli", "qqp": "qqp", "squad": "squad", "squad_dev_split": "squad"}


@dataclass(frozen=True)
class TableSpec:
    key: str
    reported: str
    caption: str
    methods: dict[str, MethodRow]
    reproduce: Callable[[dict, dict[str, dict], dict[str, MethodRow]], dict | None]
    kind_column: str = "granularity"  # the 4th LaTeX column: granularity (pruning) or uniform (quant)
    encoder: bool = False  # rows gather one record per task (Δ in %p per task column)


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
    if name == "block_drop" and method_cfg.get("rule") == "top" and methods is PRUNING_DECODER:
        return MethodRow("Top-layer drop", "120")
    if name == "block_drop" and method_cfg.get("rule", "influence") == "influence" and methods is PRUNING_ENCODER:
        return MethodRow("Block drop (BI)", "")
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
    if record.get("kind") != "compressed" or record["config"].get("task", {}).get("name", "lm") != "lm":
        return None  # perplexity tables take language-modelling runs only
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


def _speedup(record: dict, by_id: dict[str, dict]) -> float | None:
    """Measured forward-time speedup over the dense baseline on the same hardware, for physically
    smaller models only (fake quantization is not faster)."""
    dense = by_id.get(record.get("dense_id", ""))
    if not record["compression"].get("structured") or dense is None:
        return None
    fast, slow = record.get("timing", {}).get("forward_s"), dense.get("timing", {}).get("forward_s")
    if not fast or not slow or dense["hardware"]["name"] != record["hardware"]["name"]:
        return None
    return round(slow / fast, 2)


def _encoder_granularity(comp: dict) -> str:
    """The survey's codes: L (layers), N (neurons), H (heads), W (weights)."""
    if "dropped_blocks" in comp:
        return "L"
    if comp.get("structured"):
        return "N,H" if "heads_kept" in comp else "N"
    return "W"


def _encoder_rows(records: list[dict], by_id: dict[str, dict], methods: dict[str, MethodRow]) -> list[dict]:
    """One row per (model, method config, recipe): the Δ (%p, compressed − fine-tuned baseline)
    of each task in its column, Avg over the tasks present."""
    rows: dict[str, dict] = {}
    for r in records:
        task = r["identity"].get("task", {}).get("name")
        if r.get("kind") != "compressed" or task not in ENCODER_COLUMNS:
            continue
        meta = _method_meta(r["identity"]["method"], methods)
        if meta is None:
            continue
        key = json.dumps({k: v for k, v in r["identity"].items() if k != "task"}, sort_keys=True, default=str)
        comp = r["compression"]
        flops = comp.get("flops_comp_rate")
        row = rows.setdefault(key, {
            "source": "reproduced", "method": meta.label, "ref": meta.ref, "plm": r["config"]["model"]["name"],
            "granularity": _encoder_granularity(comp), "uniform": meta.uniform, "cost": meta.cost,
            "comp_rate": round(flops if flops is not None else comp["comp_rate"], 4),
            "rate_basis": "flops" if flops is not None else "memory", "speedup": _speedup(r, by_id),
            "hardware": r["hardware"]["name"], "record": [], "note": [], "flags": ""})
        col = ENCODER_COLUMNS[task]
        row[col] = round(r["delta"], 2)
        row["record"].append(r["id"])
        if task == "squad_dev_split":
            row["note"].append("squad = squad_dev_split (offline variant: dev articles halved), F1")
        n = r["metrics"][task][next(k for k in r["metrics"][task] if isinstance(r["metrics"][task][k], dict))]
        if r["config"]["task"].get("max_eval_examples"):
            row["note"].append(f"{task}: first {n.get('examples')} eval examples")
    out = []
    for row in rows.values():
        deltas = [row[c] for c in ("mnli", "qqp", "squad") if row.get(c) is not None]
        row["avg"] = round(sum(deltas) / len(deltas), 2) if deltas else None
        row["record"] = ";".join(row["record"])
        row["note"] = "; ".join(dict.fromkeys(row["note"]))
        out.append(row)
    return out


TABLES = {
    "table3": TableSpec("table3", "table3_pruning_decoder.csv",
                        "Pruning of decoder-only models: WikiText-2 perplexity (reported vs reproduced).",
                        PRUNING_DECODER, _decoder_row),
    "table5": TableSpec("table5", "table5_quantization_decoder.csv",
                        "Quantization of decoder-only models: WikiText-2 perplexity (reported vs reproduced).",
                        QUANT_DECODER, _decoder_row, kind_column="uniform"),
    "table2": TableSpec("table2", "table2_pruning_encoder.csv",
                        "Pruning of encoder-only models: accuracy / F1 difference (%p) to the fine-tuned model.",
                        PRUNING_ENCODER, _encoder_rows, encoder=True),
    "table4": TableSpec("table4", "table4_quantization_encoder.csv",
                        "Quantization of encoder-only models: accuracy / F1 difference (%p) to the fine-tuned model.",
                        QUANT_ENCODER, _encoder_rows, kind_column="uniform", encoder=True),
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
    if spec.encoder:
        rows = spec.reproduce(records, by_id, spec.methods)
        extra = ["hardware", "record", "flags"]
        repro = pd.DataFrame(rows, columns=list(rep.columns) + extra)
        if repro.empty:
            return rep
        repro = repro.sort_values(["plm", "method", "comp_rate", "record"], kind="stable")
        return pd.concat([rep, repro.astype(object)], ignore_index=True)
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
    if spec.encoder:
        cols = [("Method", "method", None), ("Ref.", "ref", None), ("PLM", "plm", None),
                ("Gran." if spec.kind_column == "granularity" else "Uniform", spec.kind_column, None),
                ("Rate", "comp_rate", 3), ("MNLI", "mnli", 2), ("QQP", "qqp", 2), ("SQuAD", "squad", 2),
                ("Avg", "avg", 2), ("Speedup", "speedup", 2), ("Record", "record", None)]
        return _latex(spec, df, cols)
    cols = [("Method", "method", None), ("Ref.", "ref", None), ("PLM", "plm", None),
            ("Gran." if spec.kind_column == "granularity" else "Uniform", spec.kind_column, None),
            ("Rate", "comp_rate", 3), ("PPL (PLM)", "ppl_plm", 2),
            ("PPL (comp.)", "ppl_compressed", 2), ("$\\Delta$", "delta_ppl", 2), ("Speedup", "speedup", 2),
            ("Record", "record", None)]
    return _latex(spec, df, cols)


def _latex(spec: TableSpec, df: pd.DataFrame, cols: list[tuple[str, str, int | None]]) -> str:
    head = " & ".join(h if h.startswith("$") else latex_escape(h) for h, _, _ in cols) + r" \\"
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             rf"\caption{{{latex_escape(spec.caption)}}}", rf"\label{{tab:{spec.key}}}",
             r"\begin{tabular}{" + "l" * 4 + "r" * (len(cols) - 5) + "l}", r"\toprule", head]
    for source in ("reported", "reproduced"):
        part = df[df["source"] == source]
        if part.empty:
            continue
        lines += [r"\midrule", rf"\multicolumn{{{len(cols)}}}{{l}}{{\emph{{{source}}}}} \\"]
        for _, row in part.iterrows():
            cells = [_cell(key, row.get(key), digits) for _, key, digits in cols]
            if source == "reproduced" and isinstance(row.get("flags"), str) and row["flags"] and not spec.encoder:
                cells[6] += r"$^\dagger$"
            lines.append(" & ".join(cells) + r" \\")
    note = (r"\par\footnotesize Reproduced rows: task columns are differences (\%p) to the fine-tuned model; "
            r"rate as in the survey (FLOPs-based where marked in the CSV); Record = results/runs/<id>.json."
            if spec.encoder else
            r"\par\footnotesize Reproduced rows: rate = zero fraction of the compressed linears (pruning) or "
            r"1 - stored bits / 16 bits (quantization); $\dagger$ = flagged (non-finite or $>10^4$ perplexity); "
            r"Record = results/runs/<id>.json.")
    lines += [r"\bottomrule", r"\end{tabular}", note, r"\end{table}"]
    return "\n".join(lines) + "\n"


def write(spec: TableSpec, df: pd.DataFrame, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    csv, tex = out_dir / f"{spec.key}.csv", out_dir / f"{spec.key}.tex"
    df.to_csv(csv, index=False)
    tex.write_text(to_latex(spec, df))
    return csv, tex
