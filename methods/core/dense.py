"""The uncompressed baseline: leaves every weight as it is."""
from __future__ import annotations

from methods.core.base import CompressionResult, Kind, LayerwiseMethod, register
from methods.core.model_facts import ModelSize


@register("dense")
class Dense(LayerwiseMethod):
    def compress(self, block_index, name, layer, stats=None) -> None:
        pass

    def result(self, before: ModelSize, after: ModelSize) -> CompressionResult:
        return CompressionResult(Kind.DENSE, "", before, after)
