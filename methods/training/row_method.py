"""What a trained method that is one survey row carries: its preset and table metadata, the weight
of logit distillation from the fine-tuned teacher, and where it departs from its paper."""
from __future__ import annotations

from typing import Any, Sequence

from methods.core.base import TableRow, TrainedMethod
from methods.core.settings import Positive


class RowMethod(TrainedMethod):
    """`distill`: weight of the logit-distillation term (0: labels only, no teacher loaded);
    `deviations`: where this run departs from the paper (recorded with the result)."""

    def __init__(self, preset: str, label: str, ref: str, distill: float, temperature: Positive,
                 deviations: Sequence[str], tables: Sequence[str]):
        if distill < 0:
            raise ValueError(f"distill (the KD weight) must be >= 0, got {distill}")
        self.preset, self.lab, self.ref = preset, label, ref
        self.distill, self.temperature = distill, temperature
        self.deviations, self.tables = list(deviations), tuple(tables)
        self.facts: dict[str, Any] = {}

    @property
    def uses_teacher(self) -> bool:
        return self.distill > 0

    def row(self) -> TableRow:
        """The row in each of `tables` (granularity for pruning, uniformity for quantization)."""
        return TableRow(self.lab, self.ref, cost="high", columns={"preset": self.preset})

    @property
    def rows(self) -> dict[str, TableRow]:
        return {t: self.row() for t in self.tables}
