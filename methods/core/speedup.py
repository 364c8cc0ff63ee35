"""A measured speedup: the ratio of dense to compressed time, pass by pass, the two models timed
interleaved in one process, in one dtype, on one device. The record keeps every ratio, their
median and their interquartile range; a range that includes 1.0 claims no speedup."""
from __future__ import annotations

import statistics
from typing import Any


def ratio_summary(ratios: list[float]) -> dict[str, Any]:
    """Median and quartiles (inclusive method) of paired per-pass ratios (> 1: compressed is faster)."""
    if len(ratios) < 2:
        raise ValueError(f"a speedup needs at least 2 paired passes, got {len(ratios)}")
    q1, median, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return {"median": median, "q1": q1, "q3": q3, "ratios": list(ratios), "repeats": len(ratios)}


def paired(dense: list[float], compressed: list[float], higher_is_faster: bool = False) -> dict[str, Any]:
    """The ratio summary of pass-by-pass measurements: times (dense / compressed), or throughputs
    (compressed / dense) where `higher_is_faster`."""
    ratios = [c / d if higher_is_faster else d / c for d, c in zip(dense, compressed)]
    return ratio_summary(ratios)
