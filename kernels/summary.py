"""A benchmark file as Markdown: the device and its ceilings, each format's per-layer ratio on
the largest shape set at every token count, and the end-to-end ratios.

    python kernels/summary.py results/bench/kernels-cpu.json [more files]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


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
                    backend = ok[0].get("backend", "")
                    g = 1.0
                    for e in ok:
                        g *= e["speedup"]
                    frac = sum(e["achieved_fraction"] for e in ok) / len(ok)
                    bad = "" if all(e.get("ok", True) for e in ok) else " WRONG"
                    cells.append(f"{g ** (1 / len(ok)):.2f}× ({100 * frac:.0f}%){bad}")
                lines.append(f"| {key} | {dtype} | {backend} | " + " | ".join(cells) + " |")
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
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    for path in sys.argv[1:]:
        print(markdown(json.loads(Path(path).read_text())))
