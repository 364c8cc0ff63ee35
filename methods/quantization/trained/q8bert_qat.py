"""Q8BERT (Zafrir et al., 2019) [169], quantization-aware fine-tuning: every linear and the word
embedding hold symmetric linear 8-bit weights, one scale per matrix (max|W| / 127, observed from
the current weights at every forward), and every linear's input is quantized to 8 bits with a
static range, the moving average of the batches' absmax; rounding passes gradients straight
through. Table 4's row (75% against fp32). The post-training `q8bert` stays as the baseline.

Deviation: Q8BERT quantizes while it fine-tunes from the pre-trained BERT; the harness continues
from the fine-tuned model (the CPU recipe is far shorter than a fine-tune), recorded as such."""
from __future__ import annotations

from typing import Any

import torch

from methods.core.base import register
from methods.quantization.trained.fake_quant import UniformWeight, WeightQuantizer
from methods.quantization.trained.qat import QATMethod
from methods.core.settings import Bits


@register("q8bert_qat")
class Q8BERTQAT(QATMethod):
    smoke = ({},)
    def __init__(self, wbits: Bits = 8, abits: Bits = 8, embeddings: bool = True, preset: str = "q8bert_qat",
                 **kw: Any):
        kw.setdefault("deviations", ["continues from the fine-tuned model (the paper quantizes during fine-tuning)",
                                     "position and token-type embeddings stay fp32"])
        super().__init__(preset=preset, label="Q8BERT", ref="169", wbits=wbits, abits=abits, embeddings=embeddings,
                         **kw)

    def weight_quantizer(self, key: str, weight: torch.Tensor) -> WeightQuantizer:
        return UniformWeight(self.wbits, sym=True, per="tensor")
