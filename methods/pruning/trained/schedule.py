"""Zhu & Gupta's cubic sparsity schedule, with pruning steps on a fixed interval.

    s_t = s_f + (s_i − s_f)·(1 − (t − t₀)/(t_end − t₀))³   at t = t₀, t₀ + Δt, …, then held at s_f

Between pruning steps the sparsity is that of the last pruning step; before t₀ the model is dense.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CubicSchedule:
    final: float
    start: int
    end: int
    interval: int = 1
    initial: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.initial <= self.final < 1:
            raise ValueError(f"sparsity schedule needs 0 <= initial ({self.initial}) <= final ({self.final}) < 1")
        if not 0 <= self.start <= self.end or self.interval < 1:
            raise ValueError(f"sparsity schedule needs 0 <= start ({self.start}) <= end ({self.end}) and "
                             f"interval >= 1 ({self.interval})")

    @classmethod
    def over(cls, final: float, steps: int, start_frac: float, end_frac: float, interval: int,
             initial: float = 0.0) -> "CubicSchedule":
        """A schedule spanning fractions of a run of `steps` optimizer steps (the end step is
        rounded to a pruning step, so that the final sparsity is reached on one)."""
        start = int(start_frac * steps)
        end = start + max(0, (int(end_frac * steps) - start) // interval * interval)
        return cls(final, start, end, interval, initial)

    def prunes_at(self, step: int) -> bool:
        return self.start <= step <= self.end and (step - self.start) % self.interval == 0

    def at(self, step: int) -> float:
        """The target sparsity in force after `step` optimizer steps."""
        if step < self.start:
            return 0.0
        last = min(self.end, self.start + (step - self.start) // self.interval * self.interval)
        if self.end == self.start:
            return self.final
        frac = (last - self.start) / (self.end - self.start)
        return self.final + (self.initial - self.final) * (1 - frac) ** 3
