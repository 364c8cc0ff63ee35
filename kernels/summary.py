"""A benchmark file as Markdown: the device and its ceilings, each format's per-layer ratio on
each shape set at every token count (with the kernel that ran, where several compete), the
end-to-end ratios, and each target of conf/kernels_bench.yaml met or not, with its figure. A
scale file (scripts/bench_speed.py) gives its compress and evaluation ratios against theirs.

    python kernels/summary.py results/bench/kernels-nvidia-h200.json [results/bench/scale-nvidia-h200.json ...]
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

TARGETS = Path(__file__).resolve().parent.parent / "conf" / "kernels_bench.yaml"


def _targets() -> dict[str, Any]:
    from omegaconf import OmegaConf
    return OmegaConf.to_container(OmegaConf.load(TARGETS).targets)


def geomean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def _per_shape(rep: dict, sets: list[str], key: str, tokens: int) -> list[dict]:
    return [e for e in rep["layers"] if e.get("set") in sets and e.get("format") == key and e.get("tokens") == tokens
            and "speedup" in e]


def per_layer_targets(rep: dict, targets: dict | None = None) -> list[dict[str, Any]]:
    """Each per-layer target with its figure (geometric mean over the target's shape sets, with the
    mean achieved fraction and the kernels that ran) and whether it is met; no figure: not met."""
    targets = targets or _targets()
    sets, out = targets["shapes"], []
    keys = list(dict.fromkeys(e["format"] for e in rep["layers"] if "format" in e and e["format"] != "dense"))
    for t in targets["per_layer"]:
        formats = keys if t["formats"] == "all" else t["formats"]
        figures = {}
        for key in formats:
            es = _per_shape(rep, sets, key, t["tokens"])
            if es:
                figures[key] = {"speedup": geomean([e["speedup"] for e in es]),
                                "achieved_fraction": sum(e["achieved_fraction"] for e in es) / len(es),
                                "kernels": sorted({e["backend"] for e in es}), "shapes": len(es)}
        if t.get("each"):
            below = {k: f for k, f in figures.items() if f["speedup"] < t["at_least"]}
            out.append({**t, "figures": figures, "below": below, "met": bool(figures) and not below})
            continue
        best = max(figures, key=lambda k: figures[k]["speedup"]) if figures else None
        out.append({**t, "figures": figures, "format": best,
                    "met": best is not None and figures[best]["speedup"] >= t["at_least"]})
    return out


def _fmt(e: dict) -> str:
    if "error" in e:
        return "n/a"
    return f"{e['speedup']:.2f}× ({100 * e['achieved_fraction']:.0f}%)"


def markdown(rep: dict) -> str:
    c = rep["ceilings"]
    peaks = ", ".join(f"{d} {v / 1e9:.0f} GFLOP/s" for d, v in c["matmul_flops"].items())
    lines = [f"**{rep['device']}** ({rep['device_type']}; torch {rep['torch']}, triton {rep['triton']}; "
             f"profile {rep['profile']}): measured matmul peak {peaks}; copy bandwidth "
             f"{c['copy_bytes_per_s'] / 1e9:.1f} GB/s.", ""]
    layers = [e for e in rep["layers"] if "format" in e]
    for set_name in dict.fromkeys(e["set"] for e in layers):
        rows = [e for e in layers if e["set"] == set_name]
        tokens = sorted({e["tokens"] for e in rows})
        shapes = list(dict.fromkeys(tuple(e["shape"]) for e in rows))
        lines += [f"Per layer, {set_name} {', '.join(f'{n}×{k}' for n, k in shapes)} (speedup over dense in the "
                  "same dtype, geometric mean over the shapes; achieved fraction of the bound in brackets):", "",
                  "| format | dtype | backend | " + " | ".join(f"{m} tok" for m in tokens) + " |",
                  "|---|---|---|" + "---|" * len(tokens)]
        for key in dict.fromkeys(e["format"] for e in rows):
            for dtype in dict.fromkeys(e["dtype"] for e in rows if e["format"] == key):
                cells, backend = [], ""
                for m in tokens:
                    es = [e for e in rows if e["format"] == key and e["dtype"] == dtype and e["tokens"] == m]
                    ok = [e for e in es if "error" not in e]
                    if not ok:
                        cells.append("n/a")
                        continue
                    ran = sorted({e.get("backend", "") for e in ok})
                    backend = ran[0] if not any("routes" in e for e in ok) else backend
                    routed = f" {'/'.join(ran)}" if any("routes" in e for e in ok) else ""
                    frac = sum(e["achieved_fraction"] for e in ok) / len(ok)
                    bad = "" if all(e.get("ok", True) for e in ok) else " WRONG"
                    cells.append(f"{geomean([e['speedup'] for e in ok]):.2f}× ({100 * frac:.0f}%){routed}{bad}")
                lines.append(f"| {key} | {dtype} | {backend or 'fastest per shape'} | " + " | ".join(cells) + " |")
        lines.append("")
    e2e = [e for e in rep.get("end_to_end", []) if "format" in e]
    if e2e:
        lines += ["End to end (ratios against the fastest dense dtype on this device; decoders: prefill latency "
                  "and decode tokens/s at batch 1; encoders: forward time of a batch):", "",
                  "| model | format | dtype | prefill / forward | decode | output rel. err |",
                  "|---|---|---|---|---|---|"]
        for e in e2e:
            if "error" in e:
                lines.append(f"| {e['model']} | {e['format']} | {e['dtype']} | n/a | n/a | {e['error'][:60]} |")
                continue
            first = e.get("prefill_speedup", e.get("forward_speedup"))
            dec = e.get("decode_speedup")
            lines.append(f"| {e['model']} | {e['format']} | {e['dtype']} | {first:.2f}× | "
                         f"{f'{dec:.2f}×' if dec is not None else '–'} | {e['logits_rel_err']:.1e} |")
    if rep.get("device_type") == "cuda":
        lines += ["", "Targets (per layer at the Llama shapes against dense bf16, geometric mean over shapes):", "",
                  "| target | met | figure |", "|---|---|---|"]
        for t in per_layer_targets(rep):
            lines.append(f"| {t['what']} (≥ {t['at_least']}×) | {'met' if t['met'] else 'NOT met'} | {_target_figure(t)} |")
    return "\n".join(lines) + "\n"


def _target_figure(t: dict) -> str:
    if not t["figures"]:
        return "no figure: no format ran at this shape"
    if t.get("each"):
        below = t["below"]
        return ("every format at or above" if not below else
                "below: " + ", ".join(f"{k} {f['speedup']:.2f}× ({', '.join(f['kernels'])})" for k, f in below.items()))
    f = t["figures"][t["format"]]
    return f"{t['format']} {f['speedup']:.2f}× ({100 * f['achieved_fraction']:.0f}% of the bound; {', '.join(f['kernels'])})"


def scale_markdown(rep: dict) -> str:
    """scripts/bench_speed.py's file: each method's compress time against the reference's, and the
    evaluation's speedup over one window per forward, each against its target."""
    t = _targets()["scale"]
    hw = rep["hardware"]
    lines = [f"**{hw.get('name', hw.get('device'))}**: {rep['model']}"
             + (" (random weights: timing only)" if rep.get("synthetic") else "")
             + f", {rep['nsamples']} × {rep['seqlen']} calibration tokens, blocks compressed: "
             f"{rep.get('compressed_blocks', 'all')}; reference procedures {rep['reference_solver']}.", "",
             "| method | reference s | compbench s | ratio (target ≤ {}) | peak GiB (reference) |".format(t["compress_at_most"]),
             "|---|---|---|---|---|"]
    for r in rep["results"]:
        peak = (f"{r['compbench_peak_bytes'] / 2**30:.1f} ({r['reference_peak_bytes'] / 2**30:.1f})"
                if r.get("compbench_peak_bytes") else "–")
        met = "met" if r["ratio"] <= t["compress_at_most"] else "NOT met"
        lines.append(f"| {r['method']} | {r['reference_s']:.2f} | {r['compbench_s']:.2f} | {r['ratio']:.3f} {met} | {peak} |")
    ev = rep.get("evaluation")
    if ev:
        met = "met" if ev["ratio"] >= t["eval_at_least"] else "NOT met"
        lines += ["", f"Evaluation, {ev['windows']} windows of {ev['seqlen']}: {ev['tokens_per_s']['compbench']:.0f} "
                      f"tokens/s batched ({ev['batch_size']} windows per forward) against "
                      f"{ev['tokens_per_s']['one_window']:.0f} one window per forward: {ev['ratio']:.2f}× "
                      f"(target ≥ {t['eval_at_least']}: {met})."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    for path in sys.argv[1:]:
        rep = json.loads(Path(path).read_text())
        print(scale_markdown(rep) if "results" in rep else markdown(rep))
