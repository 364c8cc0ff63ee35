"""Block movement pruning (Lagunas et al. 2021, "Block Pruning For Faster Transformers") [82],
in its hybrid-filled form: attention pruned by whole heads, the FFN by rows/columns (neurons),
scores learned by movement with logit distillation, and the emptied structures removed.

    m_head = TopK(S_head, s_t), m_neuron = TopK(S_neuron, s_t)     (straight-through, movement scores)
    L = task + KD;  s_t on the cubic schedule;  heads and neurons removed at the end

Deviation: the paper reaches its density through a sigmoid threshold with an L1 penalty on the
scores; here the cubic top-k schedule sets it, so that the run lands on the table's rate.
"""
from __future__ import annotations

from typing import Any

from methods.core.base import register
from methods.pruning.trained.structured import StructuredGradual
from methods.core.settings import Fraction


@register("bmp")
class BlockMovement(StructuredGradual):
    smoke = ({"rate": 0.5, "interval": 2},)
    def __init__(self, rate: Fraction = 0.752, preset: str = "bmp", label: str = "BMP", ref: str = "82", **kw: Any):
        kw.setdefault("deviations", ["top-k schedule to the target rate instead of sigmoid threshold + L1 penalty",
                                     "attention pruned as whole heads (hybrid filled)"])
        super().__init__(rate=rate, preset=preset, label=label, ref=ref, **kw)
