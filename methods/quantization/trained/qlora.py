"""QLoRA (Dettmers et al., 2023) [34]: the frozen base model in 4-bit NormalFloat (NF4, double
quantization) with LoRA adaptors on every block linear, fine-tuned on the task (adapted.py).
Table 5's row (LLaMA-2-13B, "reported in LoftQ": perplexity after WikiText-2 fine-tuning) counts
4 bits against 32, 87.5%. Offline the text is the WikiText-2 v1 valid split (task=lm_finetune),
never the test split."""
from __future__ import annotations

import torch
from torch import nn

from methods.core.base import TableRow, TrainingInputs, register
from methods.quantization.nf4 import NF4
from methods.quantization.trained.adapted import AdaptedQuantBase
from methods.core.settings import Count, Fraction, Positive


@register("qlora")
class QLoRA(AdaptedQuantBase):
    """QLoRA's 7–13B adaptors: r 64, α 16, dropout 0.1 (0.05 above 13B)."""
    smoke = ({"r": 4},)

    rows = {"table5": TableRow("QLoRA", "34", uniform="NUQ", cost="high", columns={"preset": "qlora"})}

    def __init__(self, r: Count = 64, alpha: float = 16.0, dropout: Fraction = 0.1, blocksize: Count = 64,
                 double_quant: bool = True, distill: float = 0.0, temperature: Positive = 1.0, nominal_base: int = 32,
                 preset: str = "qlora"):
        super().__init__(4, r, alpha, dropout, distill, temperature, nominal_base, preset)
        self.nf4 = NF4(blocksize, double_quant)

    @property
    def ledger(self) -> NF4:
        return self.nf4

    @torch.no_grad()
    def quantize_base(self, model: nn.Module, family, inputs: TrainingInputs | None, device: torch.device) -> None:
        for i, block in enumerate(family.blocks(model)):
            for name, layer in family.linears(block).items():
                self.nf4.compress(i, name, layer)
