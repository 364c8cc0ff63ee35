"""Common ground of the weight-quantization methods: the quantizer spec from the method's knobs
and the stored-bits ledger from which the survey's compression rate is computed."""
from __future__ import annotations

from typing import Any

from methods.core.base import CompressionResult, Kind, LayerwiseMethod, Method
from methods.core.model_facts import ModelSize
from methods.quantization.quantizer import FP16_BITS, QuantSpec, groups_per_row, stored_bits


class QuantLedger(Method):
    """Weights quantized to `wbits` (symmetric or not; per tensor / channel / group of
    `group_size` inputs; min-max or MSE clipping). Subclasses call `account` once per layer."""

    def __init__(self, wbits: int = 4, sym: bool = False, group_size: int | None = -1,
                 granularity: str | None = None, clip: str = "minmax"):
        self.spec = QuantSpec.from_knobs(wbits, sym, group_size, granularity, clip)
        self.ledger: dict[str, tuple[float, int]] = {}  # "block.name" -> (stored bits, weights)

    def account(self, block_index: int, name: str, rows: int, cols: int, *, bits: float | None = None,
                n_groups: float | None = None, stat_bits: float = 2 * FP16_BITS, extra_bits: float = 0.0) -> None:
        """Record what this layer costs in storage (codes + statistics + anything kept aside)."""
        if n_groups is None:
            n_groups = groups_per_row(self.spec, cols)
            if self.spec.granularity == "tensor":
                extra_bits += stat_bits  # one scale/zero pair for the whole matrix
        total = stored_bits(rows, cols, self.spec.bits if bits is None else bits, n_groups, stat_bits, extra_bits)
        self.ledger[f"{block_index}.{name}"] = (total, rows * cols)

    def totals(self) -> tuple[float, int]:
        """(stored bits, quantized weights) over every layer accounted so far."""
        return sum(b for b, _ in self.ledger.values()), sum(n for _, n in self.ledger.values())

    def result(self, before: ModelSize, after: ModelSize) -> CompressionResult:
        stored, weights = self.totals()
        return CompressionResult(Kind.QUANTIZED, "W", before, after, stored_bits=stored, quantized_weights=weights,
                                 facts=self.summary())

    def summary(self) -> dict[str, Any]:
        stored, weights = self.totals()
        out = {"wbits": self.spec.bits, "sym": self.spec.sym, "quant_granularity": self.spec.granularity,
               "group_size": self.spec.group_size if self.spec.granularity == "group" else None,
               "clip": self.spec.clip}
        if weights:
            out["bits_per_weight"] = stored / weights
        return out


class QuantMethod(QuantLedger, LayerwiseMethod):
    """A weight quantizer applied by the sequential engine, one linear at a time."""
