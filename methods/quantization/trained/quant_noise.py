"""Quant-Noise (Fan et al., 2021) [128], scalar int8: while fine-tuning, each forward quantizes only
a random fraction p of the weights (and of the activations), the rest stay in full precision, so
the model learns to tolerate quantization without the bias of quantizing everything at once; at
evaluation everything is quantized:

    training:  ŵ_ij = Q(w_ij) with probability p, else w_ij      (gradient straight through)
    inference: ŵ = Q(w), x̂ = Q(x)

Q: affine 8-bit with one range per matrix (min-max of the current weights) and per-tensor
activation ranges (moving average). Table 4's row: RoBERTa-base int8, 75% against fp32.

The iPQ variant (`scheme: ipq`, preset `quant_noise_ipq`): training with the noise fairseq uses
for product quantization, random blocks of `block_size` consecutive input weights dropped
(zeroed, the rest scaled by 1/(1 − p)), then iPQ: every block linear's blocks replaced by the
nearest of `centroids` k-means codewords (indices of log2(K) bits per block), and the codewords
fine-tuned with the assignments fixed for the rest of the steps:

    training:  ŵ = w ⊙ m / (1 − p),  m: a block kept with probability 1 − p
    iPQ:       w_block ≈ C[a_block],  C ∈ R^{K × block_size} trained,  a fixed

Its rate counts the indices and the fp32 codebooks against fp32 (full overhead).

Deviations: fairseq fits its ranges with a histogram observer every 1000 steps (min-max here,
every step) and quantizes each module's outputs (here each linear's input); iPQ quantizes all
linears at once, then fine-tunes (fairseq goes layer group by group), and leaves the embedding
in full precision."""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from methods.core.base import TrainingInputs, register
from methods.quantization.rptq import lloyd
from methods.quantization.trained.fake_quant import ActQuant, UniformWeight, WeightQuantizer
from methods.quantization.trained.qat import QATMethod
from methods.core.settings import Bits, Count, Fraction, Seed, UnitInterval


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


class BlockDrop(WeightQuantizer):
    """Quant-Noise's training noise for iPQ: random blocks of `block_size` inputs zeroed, the rest
    scaled by 1/(1 − p); the identity at evaluation."""

    def __init__(self, p: float, block_size: Count):
        super().__init__()
        self.p, self.block_size = p, block_size

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return w
        rows, cols = w.shape
        keep = torch.rand(rows, cols // self.block_size, device=w.device) >= self.p
        return w * keep.repeat_interleave(self.block_size, 1).to(w.dtype) / (1 - self.p)


def pq_kmeans(x: torch.Tensor, k: int, iters: int = 15, seed: int = 0) -> torch.Tensor:
    """Codeword labels of the blocks `x` (n, d): k-means++ starts (a seeded generator), then Lloyd's
    iterations; distances as ‖x‖² − 2x·c + ‖c‖² (one matmul), the seeding's nearest-start distances
    updated one new start at a time (O(n·d) each, for the K = 256 codewords of iPQ)."""
    n = x.shape[0]
    k = min(k, n)
    g = torch.Generator().manual_seed(seed)
    norms = x.pow(2).sum(1)

    def dist(c: torch.Tensor) -> torch.Tensor:
        return (norms[:, None] - 2 * x @ c.T + c.pow(2).sum(1)[None, :]).clamp_min(0)
    centres = [x[torch.randint(n, (1,), generator=g)]]
    d2 = dist(centres[0]).squeeze(1)
    for _ in range(1, k):
        p = d2 / d2.sum() if d2.sum() > 0 else torch.full_like(d2, 1 / n)
        centres.append(x[torch.multinomial(p, 1, generator=g)])
        d2 = torch.minimum(d2, dist(centres[-1]).squeeze(1))
    c = lloyd(x, torch.cat(centres), iters, lambda _x, c: dist(c))
    return dist(c).argmin(1)


class ProductCodes(WeightQuantizer):
    """Product quantization: each row's consecutive `block_size` weights → the nearest of K shared
    codewords (k-means over the matrix's blocks); the codewords are the parameter, the indices fixed."""

    def __init__(self, weight: torch.Tensor, block_size: Count, k: int, iters: Count = 15, seed: Seed = 0):
        super().__init__()
        rows, cols = weight.shape
        if cols % block_size:
            raise ValueError(f"block_size {block_size} does not divide the weight's {cols} inputs")
        blocks = weight.detach().float().reshape(-1, block_size).cpu()
        labels = pq_kmeans(blocks, k, iters, seed)
        k = int(labels.max()) + 1
        count = torch.bincount(labels, minlength=k).unsqueeze(1).clamp_min(1)
        codewords = torch.zeros(k, block_size, dtype=torch.float64).index_add_(0, labels, blocks.double()) / count
        self.codewords = nn.Parameter(codewords.to(weight.dtype).to(weight.device))
        self.codewords.no_decay = True
        self.register_buffer("assign", labels.view(rows, cols // block_size).to(weight.device))
        self.bits = math.log2(max(k, 2)) / block_size     # index bits per weight
        self.shape = (rows, cols)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.codewords[self.assign].reshape(self.shape)

    def stats(self, w: torch.Tensor) -> int:
        return self.codewords.numel()


@register("quant_noise")
class QuantNoise(QATMethod):
    """`p`: the fraction quantized at each training forward (fairseq's --quant-noise-scalar)."""
    smoke = ({},)

    def __init__(self, p: UnitInterval = 0.5, wbits: Bits = 8, abits: Bits = 8, embeddings: bool = True,
                 scheme: str = "int8", block_size: Count = 8, centroids: Count = 256, noise_fraction: Fraction = 0.5,
                 preset: str = "quant_noise", **kw: Any):
        if not 0 < p <= 1:
            raise ValueError(f"quant-noise rate p must lie in (0, 1], got {p}")
        if scheme not in ("int8", "ipq"):
            raise ValueError(f"scheme must be int8 (scalar) or ipq (product quantization), got '{scheme}'")
        if scheme == "ipq" and not (0 < noise_fraction < 1 and p < 1):
            raise ValueError("iPQ trains with noise (p < 1) for noise_fraction ∈ (0, 1) of the steps, "
                             f"then fine-tunes its codewords; got p={p}, noise_fraction={noise_fraction}")
        kw.setdefault("deviations", ["min-max ranges every step, not a histogram observer every 1000 steps",
                                     "activations quantized at each linear's input, not at module outputs"]
                      + (["iPQ on all linears at once, then codeword fine-tuning", "embedding not quantized"]
                         if scheme == "ipq" else []))
        ipq = scheme == "ipq"
        nominal = None if ipq else kw.pop("nominal_base", 32)   # iPQ: indices + codebooks, full overhead
        super().__init__(preset=preset, label="QuantNoise (iPQ)" if ipq else "QuantNoise", ref="128",
                         uniform="NUQ" if ipq else "UQ", wbits=math.log2(centroids) / block_size if ipq else wbits,
                         abits=16 if ipq else abits, embeddings=False if ipq else embeddings,
                         nominal_base=nominal, **kw)
        self.p, self.scheme, self.block_size, self.centroids = p, scheme, block_size, centroids
        self.noise_fraction = noise_fraction

    def weight_quantizer(self, key: str, weight: torch.Tensor) -> WeightQuantizer:
        return BlockDrop(self.p, self.block_size) if self.scheme == "ipq" else NoisyWeight(self.wbits, self.p)

    def act_quantizer(self, key: str) -> ActQuant | None:
        return NoisyAct(self.abits, self.p) if self.abits < 16 else None

    def compress_trained(self, model: nn.Module, family, inputs: TrainingInputs, device: torch.device) -> nn.Module:
        if self.scheme == "int8":
            return super().compress_trained(model, family, inputs, device)
        from methods.training.objectives import prediction_loss
        total = inputs.trainer.total_steps(len(inputs.data(0)))
        first = max(1, round(self.noise_fraction * total))
        wrapped = self.quantize(model, family)
        model.to(device)

        def loss(s, t, batch):
            return prediction_loss(s, t, self.distill, self.temperature)
        teacher = inputs.teacher if self.uses_teacher else None
        inputs.fit(model, loss, teacher=teacher, steps=first, name="noise")
        for m in wrapped.values():   # iPQ: codewords from the noise-trained weights, which then stay fixed
            m.weight_q = ProductCodes(m.linear.weight, self.block_size, self.centroids)
            m.linear.weight.requires_grad_(False)
        inputs.fit(model, loss, teacher=teacher, steps=max(1, total - first), name="codewords")
        self.facts.update(noise_steps=first, codeword_steps=max(1, total - first))
        self.freeze(model, family, wrapped)
        return model.eval()

    def summary(self) -> dict[str, Any]:
        out = {**super().summary(), "noise_p": self.p, "scheme": self.scheme}
        if self.scheme == "ipq":
            out.update(block_size=self.block_size, centroids=self.centroids, noise_fraction=self.noise_fraction)
        return out
