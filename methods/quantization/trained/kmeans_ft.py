"""K-means quantization with fine-tuning (Zhao et al., 2021) [175]: each weight matrix (and the
word embedding) is replaced by a 2^b-entry codebook from k-means over its values; the assignments
are then fixed and fine-tuning trains the codebook entries, each entry receiving the summed
gradient of the weights assigned to it (weight sharing, as Deep Compression fine-tunes):

    C, a = kmeans(W, 2^b)       Ŵ_ij = C[a_ij]        ∂L/∂C_k = Σ_{ij: a_ij = k} ∂L/∂Ŵ_ij

Table 4's row: 3 bits against fp32, 90.6%. The post-training `kmeans_quant` is its baseline."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from methods.core.base import register
from methods.quantization.squeezellm import weighted_kmeans_rows
from methods.quantization.trained.fake_quant import WeightQuantizer
from methods.quantization.trained.qat import QATMethod
from methods.core.settings import Bits, Count


class CodebookWeight(WeightQuantizer):
    """Ŵ = C[a]: a fixed assignment of every weight to one of 2^b trainable centroids."""

    def __init__(self, weight: torch.Tensor, bits: int, iters: Count = 50):
        super().__init__()
        self.bits = bits
        flat = weight.detach().float().reshape(1, -1)
        cents, assign = weighted_kmeans_rows(flat, torch.ones_like(flat), 2 ** bits, iters)
        self.centroids = nn.Parameter(cents.flatten().to(weight.dtype))
        self.centroids.no_decay = True
        self.register_buffer("assign", assign.view(weight.shape).to(torch.uint8))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.centroids[self.assign.long()]

    def stats(self, w: torch.Tensor) -> int:
        return 2 ** self.bits   # the codebook


@register("kmeans_ft")
class KMeansFineTuned(QATMethod):
    smoke = ({},)
    def __init__(self, wbits: Bits = 3, abits: Bits = 16, embeddings: bool = True, iters: Count = 50,
                 distill: float = 0.0, preset: str = "kmeans_ft", **kw: Any):
        super().__init__(preset=preset, label="K-means Quant.", ref="175", uniform="NUQ", wbits=wbits, abits=abits,
                         embeddings=embeddings, distill=distill, **kw)
        self.iters = iters

    def weight_quantizer(self, key: str, weight: torch.Tensor) -> WeightQuantizer:
        return CodebookWeight(weight, self.wbits, self.iters)

    def quantize(self, model: nn.Module, family):
        wrapped = super().quantize(model, family)
        for m in wrapped.values():   # the shared values train, not the latent weights
            m.linear.weight.requires_grad_(False)
        if self.embeddings:
            model.get_input_embeddings().parametrizations.weight.original.requires_grad_(False)
        return wrapped

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "trained": "codebook entries (assignments fixed)"}
