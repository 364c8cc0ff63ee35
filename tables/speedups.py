"""The Speedup cell of a reproduced row: only a measurement of the record's own compressed model.

  1. the run's forward-time ratio of a physically smaller model (structured pruning, low rank,
     distillation), timed interleaved with a dense copy in the run's process (`speedup`);
  2. the run's kernel stage (kernels.convert=true): the converted model against the dense copy,
     interleaved (`kernels.speedup`): decode throughput for decoders, forward time for encoders.

Either keeps every per-pass ratio with their median and quartiles. The cell shows the median,
and "≈1" where the interquartile range includes 1.0. A record whose measurement has no spread
(made before the spread was kept), or whose format has no kernel on its device, gets no cell:
nothing is taken from a benchmark file.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Speedup:
    median: float
    q1: float
    q3: float
    repeats: int
    device: str      # "AMD EPYC (CPU)", "NVIDIA H200 (GPU)"
    basis: str

    @property
    def includes_one(self) -> bool:
        """The spread includes 1.0: the measurement claims neither a speedup nor a slowdown."""
        return self.q1 <= 1.0 <= self.q3

    @property
    def claim(self) -> str:
        """What the measurement claims: "≈1" where the spread includes 1.0, else faster or slower."""
        return "≈1" if self.includes_one else ("faster" if self.median > 1 else "slower")

    @property
    def shown(self) -> str:
        """The cell's text: the median, or "≈1"."""
        return "≈1" if self.includes_one else f"{self.median:.2f}"


def _label(name: str, device: str) -> str:
    return f"{name} ({'GPU' if str(device).startswith('cuda') else 'CPU'})"


def speedup_of(record: dict) -> Speedup | None:
    """The record's own measured speedup, or None (see the module docstring)."""
    hw = record.get("hardware", {})
    own = record.get("speedup")
    if own and "median" in own:
        return Speedup(own["median"], own["q1"], own["q3"], own["repeats"], _label(own["device"], hw.get("device", "")),
                       f"own run: forward time, smaller model vs dense copy in {own.get('dtype', '?')}, "
                       f"{own['repeats']} interleaved passes")
    k = (record.get("kernels") or {})
    s = k.get("speedup")
    if k.get("format") and s and "median" in s:
        return Speedup(s["median"], s["q1"], s["q3"], s["repeats"], _label(k["device"], hw.get("device", "")),
                       f"own run: {k['format']} kernels in {k.get('dtype', '?')} vs dense copy in "
                       f"{k.get('dense_dtype', '?')}, {s['metric']}, {s['repeats']} interleaved passes")
    return None
