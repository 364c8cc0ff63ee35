"""TernaryBERT (Zhang et al., 2020) [174]: ternary weights {−α, 0, +α} by the approximation-based
TWN quantizer (per matrix in the Transformer layers, per row in the word embedding), 8-bit
activations, trained by distillation from the full-precision fine-tuned model of the same depth:

    L = Σ_l MSE(H_l^S, H_l^T) + Σ_l ℓ_att(A_l^S, A_l^T) + SCE(z^S / τ, z^T / τ)
    ŵ = α · sign(w) · 1[|w| > Δ],  Δ = 0.7 · E|w|,  α = E{|w| : |w| > Δ}     (straight-through)

Table 4's row: 2-bit weights against fp32, 1 − 2/32 = 93.8%.

Deviation: the attention term is the harness's per-head KL between attention maps (Aguilar et
al.'s) instead of the paper's MSE between attention scores; TernaryBERT's data augmentation is
not used."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from methods.core.base import TrainingInputs, register
from methods.distillation.distill import distill_same_depth
from methods.quantization.trained.fake_quant import TernaryWeight, WeightQuantizer
from methods.quantization.trained.qat import QATMethod
from methods.core.settings import Bits, Positive


@register("ternarybert")
class TernaryBERT(QATMethod):
    smoke = ({},)
    uses_teacher = True

    def __init__(self, abits: Bits = 8, embeddings: bool = True, hidden: float = 1.0, attention: float = 1.0,
                 logits: float = 1.0, temperature: Positive = 1.0, preset: str = "ternarybert", **kw: Any):
        kw.setdefault("deviations", ["attention distillation by per-head KL between attention maps, not score MSE",
                                     "no data augmentation"])
        super().__init__(preset=preset, label="TernaryBERT", ref="174", wbits=2, abits=abits, embeddings=embeddings,
                         distill=logits, temperature=temperature, **kw)
        self.sources = {"hidden": hidden, "attention": attention, "logits": logits}

    def weight_quantizer(self, key: str, weight: torch.Tensor) -> WeightQuantizer:
        return TernaryWeight(per="channel" if key == "embeddings" else "tensor")

    def train(self, model: nn.Module, family, inputs: TrainingInputs) -> None:
        distill_same_depth(model, family, inputs, {k: v for k, v in self.sources.items() if v}, self.temperature)

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "sources": self.sources, "quantizer": "TWN (Δ = 0.7·E|w|)"}
