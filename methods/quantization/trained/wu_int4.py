"""Wu et al. (2023) [151], INT4 quantization of decoders with quantization-aware fine-tuning and
knowledge distillation: 4-bit symmetric weights (one scale per output row, observed from the
current weights) and 4-bit symmetric activations (one dynamic scale per token) on every block
linear, fine-tuned with the task loss plus logit distillation from the full-precision model.
Table 5's row: GPT-2 medium, 4 bits against 32, 87.5%.

Deviation: the paper's speedup comes from its INT4 kernels; the harness simulates the arithmetic
(fake quantization) and reports no speedup for this row."""
from __future__ import annotations

from typing import Any

import torch

from methods.core.base import register
from methods.quantization.trained.fake_quant import ActQuant, UniformWeight, WeightQuantizer
from methods.quantization.trained.qat import QATMethod
from methods.core.settings import Bits, Positive


@register("wu_int4")
class WuINT4(QATMethod):
    smoke = ({},)
    roles = ("decoder",)

    def __init__(self, wbits: Bits = 4, abits: Bits = 4, distill: float = 1.0, temperature: Positive = 1.0,
                 preset: str = "wu_int4", **kw: Any):
        kw.setdefault("deviations", ["simulated INT4 arithmetic (fake quantization): no kernel speedup"])
        super().__init__(preset=preset, label="Wu et al.", ref="151", wbits=wbits, abits=abits, embeddings=False,
                         distill=distill, temperature=temperature, tables=("table5",), **kw)

    def weight_quantizer(self, key: str, weight: torch.Tensor) -> WeightQuantizer:
        return UniformWeight(self.wbits, sym=True, per="channel")

    def act_quantizer(self, key: str) -> ActQuant | None:
        return ActQuant(self.abits, "dynamic") if self.abits < 16 else None
