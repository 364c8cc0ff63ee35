"""Quant-Noise (Fan et al., 2021) [128], scalar int8: while fine-tuning, each forward quantizes only
a random fraction p of the weights (and of the activations), the rest stay in full precision, so
the model learns to tolerate quantization without the bias of quantizing everything at once; at
evaluation everything is quantized:

    training:  ŵ_ij = Q(w_ij) with probability p, else w_ij      (gradient straight through)
    inference: ŵ = Q(w), x̂ = Q(x)

Q: affine 8-bit with one range per matrix (min-max of the current weights) and per-tensor
activation ranges (moving average). Table 4's row: RoBERTa-base int8, 75% against fp32.

Deviations: fairseq fits its ranges with a histogram observer every 1000 steps (min-max here,
every step) and quantizes each module's outputs (here each linear's input); the product-
quantization variant (iPQ, noise as dropped blocks) is not implemented."""
from __future__ import annotations

from typing import Any

import torch

from methods.core.base import register
from methods.quantization.trained.fake_quant import ActQuant, UniformWeight, WeightQuantizer
from methods.quantization.trained.qat import QATMethod


def noisy(x: torch.Tensor, xq: torch.Tensor, p: float) -> torch.Tensor:
    """xq on a random fraction p of the entries, x elsewhere; the gradient reaches x everywhere."""
    keep = torch.rand_like(x) >= p
    return x + (xq - x).detach().masked_fill(keep, 0)


class NoisyWeight(UniformWeight):
    def __init__(self, bits: int, p: float):
        super().__init__(bits, sym=False, per="tensor")
        self.p = p

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        wq = super().forward(w)
        return noisy(w, wq, self.p) if self.training else wq


class NoisyAct(ActQuant):
    def __init__(self, bits: int, p: float):
        super().__init__(bits, "ema")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq = super().forward(x)
        return noisy(x, xq, self.p) if self.training else xq


@register("quant_noise")
class QuantNoise(QATMethod):
    """`p`: the fraction quantized at each training forward (fairseq's --quant-noise-scalar)."""

    def __init__(self, p: float = 0.5, wbits: int = 8, abits: int = 8, embeddings: bool = True,
                 preset: str = "quant_noise", **kw: Any):
        if not 0 < p <= 1:
            raise ValueError(f"quant-noise rate p must lie in (0, 1], got {p}")
        kw.setdefault("deviations", ["min-max ranges every step, not a histogram observer every 1000 steps",
                                     "activations quantized at each linear's input, not at module outputs"])
        super().__init__(preset=preset, label="QuantNoise", ref="128", wbits=wbits, abits=abits, embeddings=embeddings,
                         **kw)
        self.p = p

    def weight_quantizer(self, key: str, weight: torch.Tensor) -> WeightQuantizer:
        return NoisyWeight(self.wbits, self.p)

    def act_quantizer(self, key: str) -> ActQuant | None:
        return NoisyAct(self.abits, self.p) if self.abits < 16 else None

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "noise_p": self.p}
