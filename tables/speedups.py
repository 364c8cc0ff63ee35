"""The Speedup cell of a reproduced row: always measured, always labelled with its device.

In order of preference:
  1. the run's own forward-time ratio of a physically smaller model (structured pruning,
     low rank, distillation), measured in the run's process against the dense model;
  2. the run's own kernel stage (kernels.convert=true): the converted model against dense;
  3. the kernel benchmark's end-to-end figure for the run's model and storage format
     (results/bench/kernels-<device>.json), from the file of the run's device if there is one,
     else of a device of the same type: a CPU figure is never shown for a GPU run, nor the reverse.
Decoders show decode tokens/s at batch 1 against dense; encoders the forward time of a batch.
Fake-quantized or masked weights are never timed: a format without a kernel has no cell.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from kernels.convert import NoKernel, spec_for


@dataclass(frozen=True)
class Speedup:
    value: float
    device: str      # "AMD EPYC (CPU)", "NVIDIA H200 (GPU)"
    basis: str


def _label(name: str, device_type: str) -> str:
    return f"{name} ({'GPU' if device_type == 'cuda' else 'CPU'})"


class KernelFigures:
    """The end-to-end entries of every kernel benchmark file, by (device, model, format)."""

    def __init__(self, reports: list[dict]):
        self.entries: dict[tuple[str, str, str], tuple[dict, dict]] = {}
        for rep in reports:
            for e in rep.get("end_to_end", []):
                if "error" not in e and "format" in e and not e.get("synthetic"):
                    self.entries[(rep["device"], e["model"], e["format"])] = (e, rep)

    @classmethod
    def from_dir(cls, folder: str | Path) -> "KernelFigures":
        files = sorted(Path(folder).glob("kernels-*.json")) if Path(folder).is_dir() else []
        return cls([json.loads(f.read_text()) for f in files
                    if not f.name.startswith(("kernels-smoke", "kernels-probe"))])

    def find(self, model: str, key: str, device: str, device_type: str) -> tuple[dict, dict] | None:
        if (device, model, key) in self.entries:
            return self.entries[(device, model, key)]
        for (_, m, k), (e, rep) in sorted(self.entries.items()):
            if m == model and k == key and rep["device_type"] == device_type:
                return e, rep
        return None


def speedup_of(record: dict, figures: KernelFigures | None) -> Speedup | None:
    hw = record.get("hardware", {})
    dtype_ = "cuda" if str(hw.get("device", "cpu")).startswith("cuda") else "cpu"
    own = record.get("speedup")
    if own:
        return Speedup(round(own["value"], 2), _label(own["device"], dtype_), "forward time, smaller model vs dense")
    k = record.get("kernels") or {}
    ratio = k.get("decode_speedup", k.get("forward_speedup"))
    if ratio is not None:
        return Speedup(round(ratio, 2), _label(k["device"], dtype_),
                       f"own run: {k['format']} kernels in {k.get('dtype', 'the model dtype')} vs dense")
    if figures is None:
        return None
    try:
        key = spec_for(record).key
    except NoKernel:
        return None
    if key == "dense":
        return None
    # a 2:4 model on a CPU is what kernels.convert makes of it there: CSR at 50%
    as_run = "sparse-50" if key == "2:4" and dtype_ == "cpu" else key
    found = figures.find(record["config"]["model"]["name"], as_run, hw.get("name", ""), dtype_)
    if found is None:
        return None
    e, rep = found
    ratio = e.get("decode_speedup", e.get("forward_speedup"))
    what = "decode tokens/s" if "decode_speedup" in e else "forward time"
    return Speedup(round(ratio, 2), _label(rep["device"], rep["device_type"]),
                   f"kernel bench: {as_run}{' (2:4 as CSR)' if as_run != key else ''} in {e['dtype']}, {what} "
                   f"vs the fastest dense dtype ({', '.join(e['backends'])})")
