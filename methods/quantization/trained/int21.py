"""INT2.1 (Chai et al., 2023) [14]: a 2-bit base model with error-correcting low-rank adaptors. The
base is quantized by OPTQ/GPTQ at 2 bits (per group) on calibration windows drawn from the
training text; LoRA adaptors on every block linear are then fine-tuned, so that the low-rank
terms correct the quantization error while the task is learnt (adapted.py). Table 5's row
(LLaMA-7B) counts 2 bits against 32, 93.8%.

`distill` > 0 adds logit distillation toward the full-precision model, the error-correction
objective without task labels; the paper fine-tunes with the task loss (the default)."""
from __future__ import annotations

import torch
from torch import nn

from methods.core import engine
from methods.core.base import TableRow, TrainingInputs, register
from methods.core.calibration import TokenWindows
from methods.quantization.gptq import GPTQ
from methods.quantization.trained.adapted import AdaptedQuantBase
from methods.core.settings import Bits, Count, Fraction, GroupSize, Positive


@register("int21")
class INT21(AdaptedQuantBase):
    """`wbits`, `group_size`: the OPTQ base; `nsamples`: calibration windows from the training data."""
    smoke = ({"r": 4, "nsamples": 4},)

    rows = {"table5": TableRow("INT2.1", "14", uniform="UQ", cost="high", columns={"preset": "int21"})}

    def __init__(self, wbits: Bits = 2, group_size: GroupSize = 64, nsamples: Count = 128, r: Count = 64, alpha: float = 16.0,
                 dropout: Fraction = 0.05, distill: float = 0.0, temperature: Positive = 1.0, nominal_base: int = 32,
                 preset: str = "int21"):
        super().__init__(wbits, r, alpha, dropout, distill, temperature, nominal_base, preset)
        self.gptq = GPTQ(wbits, False, group_size)
        self.nsamples = nsamples

    @property
    def ledger(self) -> GPTQ:
        return self.gptq

    def quantize_base(self, model: nn.Module, family, inputs: TrainingInputs | None, device: torch.device) -> None:
        ids = torch.cat([b["input_ids"] for b in inputs.data(0)])[: self.nsamples]
        engine.compress(model, family, self.gptq, TokenWindows(ids), device, progress=False)
