"""The survey's central trade-off as a picture, per table: quality against compression cost.

x: device-hours of the compression (log), read from the records as tables/findings.py does
(`training.device_hours` of a trained run, else `timing.compress_s` / 3600; the devices are named
in the title); y: WikiText-2 perplexity (decoders, the dense one as a reference line) or the
difference (%p) to the fine-tuned model (encoders, 0 as the reference). Each run configuration is
one point at its mean quality over seeds (a bar spans the seeds' range where it has several) and
its least cost over them (`run_cost`), coloured by
the survey's cost group of its table row: low-cost (calibration only) or high-cost (training).
One panel per model; partial-protocol records only with `include_partial`, drawn hollow."""
from __future__ import annotations

import math
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator  # noqa: E402

from tables.build import TABLES, TableSpec, belongs, is_partial, row_meta  # noqa: E402
from tables.claims import config_key, cost_of, quality, run_cost  # noqa: E402

GROUPS = {"low": ("low-cost (calibration only)", "tab:blue", "o"),
          "high": ("high-cost (training)", "tab:red", "s")}
COST_BASIS = "device-hours: training.device_hours (trained runs) or timing.compress_s / 3600 (post-training runs)"


def cost_points(spec: TableSpec, records: list[dict], include_partial: bool = False) -> list[dict]:
    """One point per (model, run configuration) of the table: label, cost group, mean device-hours,
    mean quality with the seeds' range, devices, seeds and whether it is partial."""
    configs: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        if belongs(spec, r) and (include_partial or not is_partial(r)):
            configs.setdefault((r["config"]["model"]["name"], config_key(r)), []).append(r)
    points = []
    for (model, _), rs in configs.items():
        costs = [c for c in map(cost_of, rs) if c is not None]
        qs = [q for q in (quality(r, spec.role) for r in rs) if q is not None]
        if not costs or not qs:
            continue
        meta = row_meta(rs[0], spec.key)
        points.append({"model": model, "label": f"{meta.label} {_setting(rs[0])}".strip(), "preset": rs[0]["preset"],
                       "cost": meta.cost,
                       "hours": run_cost(costs).hours, "quality": statistics.mean(qs),
                       "lo": min(qs), "hi": max(qs), "devices": sorted({c.device for c in costs}),
                       "seeds": len(rs), "partial": any(is_partial(r) for r in rs),
                       "records": [r["id"] for r in rs]})
    return points


def _setting(record: dict) -> str:
    """The point's setting in a few characters: W3A8, 2:4, 70%."""
    comp = record["compression"]
    if comp.get("wbits") is not None:
        abits = comp.get("abits")
        return f"W{comp['wbits']:.3g}" + (f"A{abits:.3g}" if abits and abits < 16 else "")
    if comp.get("kind") == "n:m" and comp.get("pattern"):
        return str(comp["pattern"])
    return f"{comp['comp_rate']:.0%}" if comp.get("comp_rate") is not None else ""


def _dense(records: list[dict], model: str) -> float | None:
    for r in records:
        if r.get("kind") == "dense" and r["config"]["model"]["name"] == model:
            return quality(r, "decoder")
    return None


def plot_cost(spec: TableSpec, records: list[dict], out_dir: Path, formats: list[str],
              include_partial: bool = False) -> list[Path]:
    """<out_dir>/cost_<table>.<fmt> for each format; [] when no record of the table has a cost."""
    points = cost_points(spec, records, include_partial)
    if not points:
        return []
    models = sorted({p["model"] for p in points})
    fig, axes = plt.subplots(1, len(models), figsize=(8.5 * len(models), 5.2), squeeze=False, layout="constrained")
    for ax, model in zip(axes[0], models):
        pts = [p for p in points if p["model"] == model]
        _panel(ax, spec, pts, records, model)
    fig.suptitle(f"{spec.key}: quality against compression cost — the survey's low-cost / high-cost trade-off\n"
                 f"{COST_BASIS}", fontsize=9.5)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = out_dir / f"cost_{spec.key}.{fmt}"
        fig.savefig(path, dpi=130, metadata={"CreationDate": None} if fmt == "pdf" else None)
        paths.append(path)
    plt.close(fig)
    return paths


def _panel(ax, spec: TableSpec, pts: list[dict], records: list[dict], model: str) -> None:
    for group, (_, colour, _) in GROUPS.items():
        xs = [p["hours"] for p in pts if p["cost"] == group]
        if xs:   # the group's span of costs, so the two groups read as regions along x
            ax.axvspan(min(xs) / 1.15, max(xs) * 1.15, color=colour, alpha=0.06, linewidth=0)
    # alternate the labels above and below their points along x, so neighbours overlap less
    offsets = {id(p): (4, 3 if i % 2 == 0 else -9) for i, p in enumerate(sorted(pts, key=lambda p: p["hours"]))}
    for group, (label, colour, marker) in GROUPS.items():
        for partial in (False, True):
            mine = [p for p in pts if p["cost"] == group and p["partial"] == partial]
            if not mine:
                continue
            xs, ys = [p["hours"] for p in mine], [p["quality"] for p in mine]
            err = [[p["quality"] - p["lo"] for p in mine], [p["hi"] - p["quality"] for p in mine]]
            ax.errorbar(xs, ys, yerr=err if any(p["seeds"] > 1 for p in mine) else None, fmt=marker, color=colour,
                        markerfacecolor="none" if partial else colour, markersize=7, capsize=2, linestyle="none",
                        label=label + (" [partial protocol]" if partial else ""))
            for p in mine:
                ax.annotate(p["label"], (p["hours"], p["quality"]), xytext=offsets[id(p)], textcoords="offset points",
                            fontsize=6.5, color="0.2")
    if spec.encoder:
        ax.axhline(0.0, color="0.15", linestyle="--", linewidth=1.0, label="fine-tuned model (Δ = 0)")
        ax.set_ylabel("difference to the fine-tuned model (%p)")
    else:
        dense = _dense(records, model)
        if dense is not None:
            ax.axhline(dense, color="0.15", linestyle="--", linewidth=1.0, label=f"dense: {dense:.2f}")
        ax.set_ylabel("WikiText-2 perplexity")
        ys = [p["quality"] for p in pts] + ([dense] if dense else [])
        if min(ys) > 0 and max(ys) / min(ys) > 2:
            ax.set_yscale("log")
            lo, hi = min(ys), max(ys)
            ticks = [m * 10.0 ** e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
                     for m in (1, 1.5, 2, 3, 5, 7) if lo / 1.1 <= m * 10.0 ** e <= hi * 1.1]
            ax.yaxis.set_major_locator(FixedLocator(ticks))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_locator(NullLocator())
    ax.set_xscale("log")
    ax.set_xlabel("compression cost (device-hours, log)")
    devices = sorted({d for p in pts for d in p["devices"]})
    ax.set_title(f"{model} — run on {', '.join(devices)}", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="best", frameon=False)


def plot_tables(keys: list[str], records: list[dict], out_dir: Path, formats: list[str],
                include_partial: bool = False) -> dict[str, list[Path]]:
    return {k: plot_cost(TABLES[k], records, out_dir, formats, include_partial) for k in keys}
