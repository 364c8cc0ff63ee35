"""Figures beside the tables (matplotlib, PNG and PDF), drawn from the same DataFrames as the CSVs:

  <table>_rate.png     the table's quality metric against compression rate, one panel per model,
                       one line per method; reported points hollow, reproduced ones filled; a log
                       axis where perplexities span more than a factor of 10
  <table>_speedup.png  the same metric against the measured speedup (only rows that have one),
                       each panel naming the device the speedups were measured on

Decoder tables plot WikiText-2 perplexity (the dense model as a dashed line); encoder tables the
average difference (%p) to the fine-tuned model over the tasks present."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter, ScalarFormatter  # noqa: E402
import pandas as pd  # noqa: E402

from tables.build import TableSpec  # noqa: E402

PARTIAL = " [partial protocol]"


MARKERS = ("o", "s", "^", "D")


@dataclass
class Figure:
    """What one saved figure shows: its files and the methods drawn per panel (model)."""

    paths: list[Path]
    panels: dict[str, list[str]] = field(default_factory=dict)


def _metric(spec: TableSpec, df: pd.DataFrame) -> tuple[str, pd.Series]:
    if spec.encoder:
        cols = [c for c in ("avg", "squad", "mnli", "qqp") if c in df.columns]
        value = pd.to_numeric(df[cols[0]], errors="coerce") if cols else pd.Series(float("nan"), index=df.index)
        for c in cols[1:]:
            value = value.fillna(pd.to_numeric(df[c], errors="coerce"))
        return "difference to the fine-tuned model (%p)", value
    return "WikiText-2 perplexity", pd.to_numeric(df["ppl_compressed"], errors="coerce")


def _panel_name(row: pd.Series) -> str:
    plm = row.get("plm")
    model = plm if isinstance(plm, str) and plm else "bert-base"
    return f"{model} ({row['source']})"


def _device(rows: pd.DataFrame, column: str) -> str:
    names = sorted({d for d in rows.get(column, pd.Series(dtype=object)).dropna() if isinstance(d, str) and d})
    return ", ".join(names)


def _line_labels(spec: TableSpec, df: pd.DataFrame) -> pd.Series:
    """One line per method, split by the table's kind column (2:4 vs unstructured, UQ vs NUQ)
    where one method appears with several values of it in the same panel."""
    col = spec.kind_column if spec.kind_column in df.columns else None
    labels = df["method"].astype(str)
    if col is None:
        return labels
    kinds = df[col].astype(str)
    panel = [_panel_name(r) for _, r in df.iterrows()]
    groups = pd.DataFrame({"panel": panel, "method": labels, "kind": kinds})
    several = groups.groupby(["panel", "method"])["kind"].transform("nunique") > 1
    return labels.where(~several, labels + " (" + kinds + ")")


def _draw(spec: TableSpec, df: pd.DataFrame, x_col: str, x_label: str, out: Path, formats: list[str],
          title: str) -> Figure | None:
    label, y = _metric(spec, df)
    x = pd.to_numeric(df[x_col], errors="coerce") if x_col in df.columns else pd.Series(float("nan"), index=df.index)
    data = df.assign(_x=x, _y=y).dropna(subset=["_x", "_y"])
    if data.empty:
        return None
    data = data.assign(_line=_line_labels(spec, data))
    if "partial" in data.columns:   # partial-protocol records (include_partial=true): marked in the legend, dashed
        part = data["partial"].fillna("").astype(str) != ""
        data.loc[part, "_line"] = data.loc[part, "_line"] + PARTIAL
    panels = list(dict.fromkeys(_panel_name(r) for _, r in data.iterrows()))
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.4 * ncols, 4.4 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    result = Figure([])
    for ax, panel in zip(axes.flat, panels):
        rows = data[[_panel_name(r) == panel for _, r in data.iterrows()]]
        reproduced = rows["source"].iloc[0] == "reproduced"
        methods = list(dict.fromkeys(rows["_line"]))
        result.panels[panel] = methods
        colors = plt.get_cmap("tab20").colors
        for i, method in enumerate(methods):
            pts = rows[rows["_line"] == method].sort_values("_x")
            color = colors[(2 * i) % 20 if len(methods) <= 10 else i % 20]
            ax.plot(pts["_x"], pts["_y"], marker=MARKERS[i // 10 % len(MARKERS)], markersize=6, linewidth=1.2,
                    label=method, color=color, markerfacecolor=color if reproduced else "none",
                    linestyle="--" if method.endswith(PARTIAL) else "-")
        if not spec.encoder and "ppl_plm" in rows.columns:
            dense = pd.to_numeric(rows["ppl_plm"], errors="coerce").dropna().round(2).unique()
            if len(dense) == 1:   # the papers of one panel may report different dense figures: then none
                ax.axhline(float(dense[0]), color="0.5", linestyle="--", linewidth=0.8, label="dense")
        values = rows["_y"]
        if not spec.encoder and values.min() > 0 and values.max() / values.min() > 10:
            ax.set_yscale("log")
        if x_col == "speedup":
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.axvline(1.0, color="0.7", linewidth=0.6)
        where = _device(rows, "speedup_device" if x_col == "speedup" else "hardware")
        ax.set_title(f"{panel}" + (f"\n{where}" if reproduced and where else
                                   ("\nsurvey's figures" if not reproduced else "")), fontsize=9)
        ax.set_xlabel(x_label)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5, ncol=2 if len(methods) > 8 else 1, loc="best")
    fig.suptitle(title + " (hollow: reported; filled: reproduced)", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    for fmt in formats:
        path = out.with_suffix(f".{fmt}")
        # no creation date in the file: a figure regenerated from the same records is the same file
        fig.savefig(path, dpi=130, metadata={"CreationDate": None} if fmt == "pdf" else None)
        result.paths.append(path)
    plt.close(fig)
    return result


def plot_table(spec: TableSpec, df: pd.DataFrame, out_dir: Path, formats: list[str]) -> list[Figure]:
    """The table's figures (those with data) under `out_dir`."""
    figs = [_draw(spec, df, "comp_rate", "compression rate", out_dir / f"{spec.key}_rate", formats,
                  f"{spec.key}: quality against compression rate"),
            _draw(spec, df, "speedup", "measured speedup over dense (log)", out_dir / f"{spec.key}_speedup", formats,
                  f"{spec.key}: quality against measured speedup")]
    return [f for f in figs if f is not None]
