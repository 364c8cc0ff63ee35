"""Common ground of the weight-quantization methods: the quantizer spec from the method's knobs
and the stored-bits ledger from which the survey's compression rate is computed."""
from __future__ import annotations

from typing import Any

from torch import nn

from methods.core.base import CompressionResult, Kind, LayerwiseMethod, Method
from methods.core.model_facts import ModelSize
from methods.quantization.quantizer import FP16_BITS, QuantizedTensor, QuantSpec, groups_per_row, keep_codes, \
    stored_bits
from methods.core.settings import Bits, GroupSize


class StorageLedger(Method):
    """What a quantized model stores, layer by layer: codes, statistics and anything kept aside.
    A method whose quantizer is its own (the QAT rows) passes each layer's code bits and groups;
    `QuantLedger` below derives them from its uniform spec."""

    def _open_ledger(self, nominal_base: int | None) -> None:
        if nominal_base is not None and nominal_base not in (8, 16, 32):
            raise ValueError(f"nominal_base counts bits against a float or int format: 8, 16 or 32, got {nominal_base}")
        self.nominal_base = nominal_base
        self.ledger: dict[str, tuple[float, int]] = {}  # "block.name" -> (stored bits, weights)

    def account(self, block_index: int, name: str, rows: int, cols: int, *, bits: float, n_groups: float,
                stat_bits: float = 2 * FP16_BITS, extra_bits: float = 0.0) -> None:
        """Record what this layer costs in storage (codes + statistics + anything kept aside)."""
        self.ledger[f"{block_index}.{name}"] = (stored_bits(rows, cols, bits, n_groups, stat_bits, extra_bits),
                                                rows * cols)

    def totals(self) -> tuple[float, int]:
        """(stored bits, quantized weights) over every layer accounted so far."""
        return sum(b for b, _ in self.ledger.values()), sum(n for _, n in self.ledger.values())


class QuantLedger(StorageLedger):
    """Weights quantized to `wbits` (symmetric or not; per tensor / channel / group of
    `group_size` inputs; min-max or MSE clipping). Subclasses call `account` once per layer.

    `nominal_base`: where the row's paper counts its rate as nominal bits (1 − wbits / base, e.g.
    3/16 for OPTQ and AWQ, 8/32 for SmoothQuant), the table's rate is that count and the ledger's
    full-overhead rate stays in the record as `overhead_comp_rate`; None: the full-overhead rate.

    A `group_size` that does not divide a layer's input width leaves a narrower last group with
    its own scale and zero (GPTQ's reference does the same); the record names those layers and the
    last group's width (`ragged_last_group`) and counts its statistics like a whole group's."""

    def __init__(self, wbits: Bits = 4, sym: bool = False, group_size: GroupSize | None = -1,
                 granularity: str | None = None, clip: str = "minmax", nominal_base: int | None = None):
        self.spec = QuantSpec.from_knobs(wbits, sym, group_size, granularity, clip)
        self._open_ledger(nominal_base)
        self.ragged: dict[str, tuple[int, int]] = {}    # "block.name" -> (input width, last group's width)
        self.keeps_codes = True

    def account(self, block_index: int, name: str, rows: int, cols: int, *, bits: float | None = None,
                n_groups: float | None = None, stat_bits: float = 2 * FP16_BITS, extra_bits: float = 0.0) -> None:
        """Record what this layer costs in storage; bits and groups default to the spec's."""
        if n_groups != 0 and self.spec.granularity == "group" and cols % self.spec.group_size:
            self.ragged[f"{block_index}.{name}"] = (cols, cols % self.spec.group_size)
        if n_groups is None:
            n_groups = groups_per_row(self.spec, cols)
            if self.spec.granularity == "tensor":
                extra_bits += stat_bits  # one scale/zero pair for the whole matrix
        StorageLedger.account(self, block_index, name, rows, cols, bits=self.spec.bits if bits is None else bits,
                              n_groups=n_groups, stat_bits=stat_bits, extra_bits=extra_bits)

    def keep_codes(self, keep: bool) -> None:
        self.keeps_codes = keep

    def store_codes(self, layer: nn.Module, codes: QuantizedTensor) -> None:
        """Keep the layer's integer codes beside its dequantized weight, for kernels.convert
        (`keeps_codes` = false, the engine's `keep_codes`, saves their CPU memory on large models)."""
        if self.keeps_codes:
            keep_codes(layer, codes)

    def result(self, before: ModelSize, after: ModelSize) -> CompressionResult:
        stored, weights = self.totals()
        nominal = 1 - self.spec.bits / self.nominal_base if self.nominal_base else None
        return CompressionResult(Kind.QUANTIZED, "W", before, after, stored_bits=stored, quantized_weights=weights,
                                 nominal_rate=nominal, facts=self.summary())

    def summary(self) -> dict[str, Any]:
        stored, weights = self.totals()
        out = {"wbits": self.spec.bits, "sym": self.spec.sym, "quant_granularity": self.spec.granularity,
               "group_size": self.spec.group_size if self.spec.granularity == "group" else None,
               "clip": self.spec.clip, "nominal_base_bits": self.nominal_base}
        if weights:
            out["bits_per_weight"] = stored / weights
        if self.ragged:
            out["ragged_last_group"] = {"layers": len(self.ragged),
                                        "widths": sorted({f"{c} = {c // self.spec.group_size} x "
                                                          f"{self.spec.group_size} + {r}"
                                                          for c, r in self.ragged.values()})}
        return out


class QuantMethod(QuantLedger, LayerwiseMethod):
    """A weight quantizer applied by the sequential engine, one linear at a time."""
