"""Figures beside the tables (matplotlib, PNG and PDF), drawn from the same DataFrames as the CSVs:

  <table>_rate.png     the table's quality metric against compression rate, one panel per model,
                       one line per method; reported points hollow, reproduced ones filled
  <table>_speedup.png  the same metric against the measured speedup (only rows that have one, log
                       axis, 1× marked), each panel naming the device the speedups were measured on

Decoder tables plot WikiText-2 perplexity against the dense model's (a reference line per dense
figure); encoder tables the difference (%p) to the fine-tuned model, whose reference is Δ = 0: the
survey's Avg over its tasks where a row has one, else the row's own task. Every panel names its
model, task and device; its legend stands beside it; a point far off the rest is drawn at the
axis edge with an arrow and its value (OUTLIER_FACTOR, OUTLIER_MADS)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.axis import Axis as MplAxis  # noqa: E402
from matplotlib.figure import Figure as MplFigure  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator  # noqa: E402
import pandas as pd  # noqa: E402

from tables.build import DISTILLATION, SURVEY_TASKS, TableSpec, added_task_columns  # noqa: E402

PARTIAL = " [partial protocol]"
Color = tuple[float, float, float]
# strong qualitative colours crossed with marker shapes: (colour, marker) is unique for 80 lines
PALETTE = tuple(plt.get_cmap("tab10").colors)
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
OUTLIER_FACTOR = 5.0   # decoders: a perplexity above this many times the panel's dense one
OUTLIER_MADS = 6.0     # encoders: a Δ this many median absolute deviations from the panel's median
MIN_MAD = 1.0          # %p: a tight cluster of Δs does not make its neighbours outliers
PAD = 0.10             # of the data's span, each side
REFERENCE = {"color": "0.15", "linewidth": 1.1}
DENSE_STYLES = ("--", ":", "-.")


@dataclass
class Figure:
    """What one saved figure shows: its files and the methods drawn per panel (model)."""

    paths: list[Path]
    panels: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class XAxis:
    """What a figure plots along x: the column, its label, and whether it is a speedup (log, 1× marked)."""

    column: str
    label: str

    @property
    def speedup(self) -> bool:
        return self.column == "speedup"


RATE = XAxis("comp_rate", "compression rate")
SPEEDUP = XAxis("speedup", "measured speedup over dense (log)")


# ---------------------------------------------------------------------------------------------
# what is plotted: the quality value, its task, the reference
# ---------------------------------------------------------------------------------------------

def _num(df: pd.DataFrame, column: str) -> pd.Series:
    return pd.to_numeric(df[column], errors="coerce") if column in df.columns else pd.Series(float("nan"), index=df.index)


def _task_columns(df: pd.DataFrame) -> list[tuple[str, str]]:
    """(key, header) of every encoder task column: the survey's three, then those the table added."""
    return [(k, h) for k, h in [*SURVEY_TASKS, *added_task_columns(df)] if k in df.columns]


def _plotted_tasks(spec: TableSpec, df: pd.DataFrame) -> pd.Series:
    """Per row, the task keys its value stands for: the survey's tasks it has (their Avg), else
    the added task columns it has; decoders: 'wikitext2'."""
    if not spec.encoder:
        return pd.Series("wikitext2", index=df.index)
    cols = _task_columns(df)
    survey = {k for k, _ in SURVEY_TASKS}

    def tasks(row: pd.Series) -> str:
        have = [k for k, _ in cols if pd.notna(pd.to_numeric(row[k], errors="coerce"))]
        own = [k for k in have if k in survey] if pd.notna(pd.to_numeric(row.get("avg"), errors="coerce")) else []
        return ",".join(own or have)
    return df.apply(tasks, axis=1) if len(df) else pd.Series(dtype=object)


def _values(spec: TableSpec, df: pd.DataFrame) -> pd.Series:
    """The quality figure of each row: perplexity, or the Δ of the tasks `_plotted_tasks` names
    (the survey's Avg where the row has one, else the mean of its added task columns)."""
    if not spec.encoder:
        return _num(df, "ppl_compressed")
    tasks, avg = _plotted_tasks(spec, df), _num(df, "avg")

    def value(row: pd.Series) -> float:
        keys = [k for k in tasks[row.name].split(",") if k]
        if not keys:
            return float("nan")
        return avg[row.name] if pd.notna(avg[row.name]) else float(pd.to_numeric(row[keys]).mean())
    return df.apply(value, axis=1) if len(df) else avg


def _baselines(rows: pd.DataFrame) -> list[tuple[str, str, float]]:
    """(task header, metric, score) of each fine-tuned model the rows' Δs are taken against, from
    the `baseline` column ('<header>[:] <metric> <score>', reproduced rows only)."""
    headers = sorted((h for _, h in _task_columns(rows)), key=len, reverse=True)
    out = []
    for cell in rows.get("baseline", pd.Series(dtype=object)).dropna():
        for entry in str(cell).split("; "):
            header = next((h for h in headers if entry.startswith(h)), None)
            metric, _, score = entry[len(header or ""):].lstrip(":").strip().rpartition(" ")
            try:
                out.append((header, metric, float(score)))
            except ValueError:
                continue
    return list(dict.fromkeys(b for b in out if b[0] is not None))


def _task_label(spec: TableSpec, rows: pd.DataFrame) -> str:
    """Which task the panel plots, in words: 'WikiText-2 perplexity', 'Avg Δ over MNLI, QQP',
    'Δ F1 on SQuAD (dev split, 1k)' (the metric where the rows name their baseline's)."""
    if not spec.encoder:
        return "WikiText-2 perplexity"
    headers = dict(_task_columns(rows))
    named = {k for ts in rows["_tasks"] for k in ts.split(",") if k}
    keys = [k for k in headers if k in named]
    if len(keys) != 1:
        return "Avg Δ over " + ", ".join(headers.get(k, k) for k in keys)
    header = headers.get(keys[0], keys[0])
    metrics = {m for h, m, _ in _baselines(rows) if h == header}
    return f"Δ {next(iter(metrics)) + ' ' if len(metrics) == 1 else ''}on {header}"


def _references(spec: TableSpec, rows: pd.DataFrame) -> list[tuple[float, str]]:
    """The panel's reference lines (value, legend label): each dense perplexity its rows carry
    (naming the methods where the papers of one panel report different ones), or Δ = 0 (with the
    fine-tuned model's score where the rows carry one)."""
    if spec.encoder:
        who = "fine-tuned teacher" if spec.kinds == DISTILLATION else "fine-tuned model"
        base = _baselines(rows)
        score = f": {base[0][1]} {base[0][2]:.2f}" if len(base) == 1 else ""
        return [(0.0, f"{who}{score} (Δ = 0)")]
    dense = _num(rows, "ppl_plm").round(2)
    values = list(dict.fromkeys(dense.dropna()))
    if len(values) == 1:
        return [(values[0], f"dense: {values[0]:g}")]
    return [(v, f"dense: {v:g} ({', '.join(dict.fromkeys(rows.loc[dense == v, 'method'].astype(str)))})")
            for v in values]


def _outliers(spec: TableSpec, y: pd.Series, refs: list[tuple[float, str]]) -> pd.Series:
    """The points drawn clipped at the axis edge: those far off (decoders: a perplexity above
    OUTLIER_FACTOR × the lowest dense one; encoders: a Δ more than OUTLIER_MADS median absolute
    deviations, at least MIN_MAD, from the panel's median) that would also more than double the
    window the other points and the references need."""
    if spec.encoder:
        mad = max((y - y.median()).abs().median(), MIN_MAD)
        far = (y - y.median()).abs() > OUTLIER_MADS * mad
    else:
        dense = min((v for v, _ in refs), default=None)
        far = y > OUTLIER_FACTOR * dense if dense else pd.Series(False, index=y.index)
    rest = [*y[~far], *(v for v, _ in refs)]
    if not rest:
        return pd.Series(False, index=y.index)
    lo, hi = min(rest), max(rest)
    return far & ((y - hi > hi - lo) | (lo - y > hi - lo))


# ---------------------------------------------------------------------------------------------
# axes: windows and ticks
# ---------------------------------------------------------------------------------------------

def _window(values: list[float], log: bool, min_span: float) -> tuple[float, float]:
    """Limits padded around `values`, at least `min_span` wide (a factor on a log axis), so one
    point or a tiny range still gets a readable window."""
    f, inv = (math.log10, lambda v: 10 ** v) if log else (float, float)
    lo, hi = f(min(values)), f(max(values))
    least = f(min_span) if log else min_span
    if hi - lo < least:
        mid = (hi + lo) / 2
        lo, hi = mid - least / 2, mid + least / 2
    span = hi - lo
    return inv(lo - PAD * span), inv(hi + PAD * span)


def _log_ticks(lo: float, hi: float, steps: tuple[float, ...]) -> list[float]:
    """Round values (`steps` × powers of ten) inside [lo, hi]."""
    return [m * 10.0 ** e for e in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
            for m in steps if lo <= m * 10.0 ** e <= hi]


def _enough(ticks: list[float], lo: float, hi: float) -> list[float]:
    """`ticks` where they are three or more, else finer round steps (1, 1.5, 2, 3, 5, 7 × 10^k)."""
    return ticks if len(ticks) >= 3 else _log_ticks(lo, hi, (1, 1.5, 2, 3, 5, 7))


def _speedup_ticks(lo: float, hi: float) -> list[float]:
    """Powers of two (0.5×, 1×, 2×, 4×) inside [lo, hi], finer steps in a narrow window."""
    return _enough([2.0 ** k for k in range(math.floor(math.log2(lo)), math.ceil(math.log2(hi)) + 1)
                    if lo <= 2.0 ** k <= hi], lo, hi)


def _set_log(axis: MplAxis, ticks: list[float], unit: str = "") -> None:
    """Labelled ticks at `ticks` only, as plain numbers (no 10^k, no unlabelled minor ticks)."""
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}{unit}"))
    axis.set_minor_locator(NullLocator())


def _y_axis(ax: Axes, spec: TableSpec, inliers: list[float], room: tuple[bool, bool]) -> tuple[float, float]:
    """Sets the y window (and log ticks where perplexities span more than a factor of 10); `room`
    leaves space below / above for clipped points. Returns the limits."""
    log = not spec.encoder and min(inliers) > 0 and max(inliers) / min(inliers) > 10
    least = max(1.0 if spec.encoder else 0.0, 0.05 * max(abs(v) for v in inliers)) if not log else 1.5
    lo, hi = _window(inliers, log, least)
    if log:
        ax.set_yscale("log")
        span = math.log10(hi / lo)
        lo, hi = lo / 10 ** (0.1 * span * room[0]), hi * 10 ** (0.1 * span * room[1])
        _set_log(ax.yaxis, _enough(_log_ticks(lo, hi, (1, 2, 5)), lo, hi))
    else:
        span = hi - lo
        lo, hi = lo - 0.1 * span * room[0], hi + 0.1 * span * room[1]
    ax.set_ylim(lo, hi)
    return lo, hi


def _x_axis(ax: Axes, axis: XAxis, xs: list[float]) -> None:
    if axis.speedup:
        # 1× (dense speed) always in view: the reader sees which side of it a method lands
        lo, hi = _window([*xs, 1.0], True, 4.0)
        ax.set_xscale("log")
        _set_log(ax.xaxis, _speedup_ticks(lo, hi), "×")
        ax.axvline(1.0, color="0.45", linestyle=":", linewidth=1.0, label="dense speed (1×)")
    else:
        lo, hi = _window(xs, False, 0.1)
        lo, hi = max(lo, -0.02), min(hi, 1.02)   # a rate lies in [0, 1]
    ax.set_xlim(lo, hi)


# ---------------------------------------------------------------------------------------------
# drawing
# ---------------------------------------------------------------------------------------------

def _panel_name(row: pd.Series) -> str:
    plm = row.get("plm")
    model = plm if isinstance(plm, str) and plm else "bert-base"
    return f"{model} ({row['source']})"


def _device(rows: pd.DataFrame, column: str) -> str:
    names = sorted({d for d in rows.get(column, pd.Series(dtype=object)).dropna() if isinstance(d, str) and d})
    return ", ".join(names)


def _line_labels(spec: TableSpec, df: pd.DataFrame) -> pd.Series:
    """One line per method, split by the table's kind column (2:4 vs unstructured, UQ vs NUQ)
    where one method appears with several values of it in the same panel; partial-protocol
    records (include_partial=true) suffixed PARTIAL."""
    col = spec.kind_column if spec.kind_column in df.columns else None
    labels = df["method"].astype(str)
    if col is not None:
        kinds = df[col].astype(str)
        groups = pd.DataFrame({"panel": df["_panel"], "method": labels, "kind": kinds})
        several = groups.groupby(["panel", "method"])["kind"].transform("nunique") > 1
        labels = labels.where(~several, labels + " (" + kinds + ")")
    if "partial" in df.columns:
        part = df["partial"].fillna("").astype(str) != ""
        labels = labels.where(~part, labels + PARTIAL)
    return labels


def _styles(lines: list[str]) -> dict[str, tuple[Color, str]]:
    """(colour, marker) per line, one method keeping its style across panels (reported beside
    reproduced): colours cycle fastest, so the first ten lines differ in colour and each pair is unique."""
    methods = list(dict.fromkeys(line.removesuffix(PARTIAL) for line in lines))
    style = {m: (PALETTE[i % len(PALETTE)], MARKERS[i // len(PALETTE) % len(MARKERS)]) for i, m in enumerate(methods)}
    return {line: style[line.removesuffix(PARTIAL)] for line in lines}


def _title(spec: TableSpec, axis: XAxis, rows: pd.DataFrame, panel: str) -> str:
    """'<model> (<source>) — <task>' over '<device>': where the speedups were timed, where the
    reproduced runs ran, or that the figures are the survey's."""
    if (rows["source"] == "reported").all():
        where = "survey's figures"
    elif axis.speedup:
        where = "speedups timed on " + (_device(rows, "speedup_device") or "an unnamed device")
    else:
        where = "run on " + (_device(rows, "hardware") or "an unnamed device")
    return f"{panel} — {_task_label(spec, rows)}\n{where}"


def _clip_mark(ax: Axes, x: float, value: float, edge: float, inside: float, color: Color) -> None:
    """An arrow from the clipped point (drawn at `inside`) to the axis `edge`, its true value beside it."""
    ax.annotate("", xy=(x, edge), xytext=(x, inside),
                arrowprops={"arrowstyle": "-|>", "color": color, "linewidth": 1.2, "shrinkA": 5, "shrinkB": 0})
    ax.annotate(f"{value:.4g}", xy=(x, inside), xytext=(7, 0), textcoords="offset points", ha="left", va="center",
                fontsize=8, color=color, fontweight="bold")


def _clip(ax: Axes, spec: TableSpec, rows: pd.DataFrame, refs: list[tuple[float, str]]) -> tuple[pd.Series, pd.Series]:
    """Sets the panel's y window around all but its outliers (`_outliers`) and the references;
    returns where each point is drawn (an outlier: near the edge it lies beyond) and, for the
    outliers, that edge (NaN elsewhere)."""
    out = _outliers(spec, rows["_y"], refs)
    inliers = [*rows.loc[~out, "_y"], *(v for v, _ in refs)]
    low = out & (rows["_y"] < min(inliers))
    lo, hi = _y_axis(ax, spec, inliers, (bool(low.any()), bool((out & ~low).any())))
    log = ax.get_yscale() == "log"
    near = {edge: (lo * (hi / lo) ** t if log else lo + (hi - lo) * t) for edge, t in ((lo, 0.1), (hi, 0.9))}
    edge = pd.Series(float("nan"), index=rows.index).mask(out & low, lo).mask(out & ~low, hi)
    return rows["_y"].where(~out, edge.map(near)), edge


def _draw_panel(ax: Axes, spec: TableSpec, axis: XAxis, rows: pd.DataFrame,
                styles: dict[str, tuple[Color, str]]) -> list[str]:
    """One model's lines, its references and clipped points; returns its line labels."""
    refs = _references(spec, rows)
    shown, edge = _clip(ax, spec, rows, refs)
    _x_axis(ax, axis, list(rows["_x"]))
    for i, (v, label) in enumerate(refs):
        ax.axhline(v, linestyle=DENSE_STYLES[i % len(DENSE_STYLES)], label=label, **REFERENCE)
    filled = (rows["source"] == "reproduced").all()
    lines = list(dict.fromkeys(rows["_line"]))
    for line in lines:
        pts = rows[rows["_line"] == line].sort_values("_x")
        color, marker = styles[line]
        ax.plot(pts["_x"], shown[pts.index], marker=marker, markersize=6.5, markeredgewidth=1.3, linewidth=1.2,
                label=line, color=color, markerfacecolor=color if filled else "none",
                linestyle="--" if line.endswith(PARTIAL) else "-")
        for idx in pts.index[edge[pts.index].notna()]:
            _clip_mark(ax, pts.at[idx, "_x"], pts.at[idx, "_y"], edge[idx], shown[idx], color)
    ax.set_xlabel(axis.label)
    ax.set_ylabel(_task_label(spec, rows) + (" (%p)" if spec.encoder else "")
                  + (" (log)" if ax.get_yscale() == "log" else ""), fontsize=8.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False,
              handlelength=2.4)
    return lines


def _labelled(spec: TableSpec, df: pd.DataFrame) -> pd.DataFrame:
    """`df`'s rows that have a quality value (`_y`) and an x (`_x`, where set), with their panel
    and line label, reproduced panels first."""
    data = df.assign(_y=_values(spec, df), _tasks=_plotted_tasks(spec, df)).dropna(subset=["_y"])
    data = data.dropna(subset=["_x"]) if "_x" in data.columns else data
    data = data.assign(_panel=[_panel_name(r) for _, r in data.iterrows()])
    data = data.assign(_line=_line_labels(spec, data))
    return data.sort_values("_panel", key=lambda p: ~p.str.endswith("(reproduced)"), kind="stable")


def render(spec: TableSpec, df: pd.DataFrame, axis: XAxis, title: str) -> tuple[MplFigure, Figure] | None:
    """The figure of `df`'s rows that have both an x (`axis`) and a quality value, one panel per
    model (reproduced first); None when no row has both."""
    x = _num(df, axis.column)
    data = _labelled(spec, df.assign(_x=x.where(x > 0) if axis.speedup else x))
    if data.empty:
        return None
    # styles follow every line of the table, so a method looks the same in its rate and speedup figures
    styles = _styles(list(dict.fromkeys([*_labelled(spec, df)["_line"], *data["_line"]])))
    panels = list(dict.fromkeys(data["_panel"]))
    ncols = min(2, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(8.2 * ncols, 4.3 * nrows + 0.5), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    result = Figure([])
    for ax, panel in zip(axes.flat, panels):
        rows = data[data["_panel"] == panel]
        ax.set_title(_title(spec, axis, rows, panel), fontsize=9)
        result.panels[panel] = _draw_panel(ax, spec, axis, rows, styles)
    fig.suptitle(f"{title}\nhollow markers: the survey's figures; filled: reproduced; dashed line: partial protocol",
                 fontsize=10)
    return fig, result


def _save(fig: MplFigure, out: Path, formats: list[str]) -> list[Path]:
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = out.with_suffix(f".{fmt}")
        # no creation date in the file: a figure regenerated from the same records is the same file
        fig.savefig(path, dpi=130, metadata={"CreationDate": None} if fmt == "pdf" else None)
        paths.append(path)
    plt.close(fig)
    return paths


def plot_table(spec: TableSpec, df: pd.DataFrame, out_dir: Path, formats: list[str]) -> list[Figure]:
    """The table's figures (those with data) under `out_dir`."""
    figs = []
    for axis, name, what in ((RATE, "rate", "compression rate"), (SPEEDUP, "speedup", "measured speedup")):
        drawn = render(spec, df, axis, f"{spec.key}: quality against {what}")
        if drawn is not None:
            fig, result = drawn
            result.paths = _save(fig, out_dir / f"{spec.key}_{name}", formats)
            figs.append(result)
    return figs
