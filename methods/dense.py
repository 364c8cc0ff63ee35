"""The uncompressed baseline: leaves every weight as it is."""
from __future__ import annotations

from methods.base import Method, register


@register("dense")
class Dense(Method):
    def compress(self, block, name, layer, stats=None) -> None:
        pass
