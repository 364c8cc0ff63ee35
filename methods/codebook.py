"""Weight quantizers of the encoder table (Table 4) that need no calibration statistics.

- `q8bert` (Zafrir et al., 2019): symmetric linear 8-bit, one scale per weight matrix
  (max|W| / 127), and 8-bit symmetric activations with calibrated static ranges.
- `kmeans_quant` (codebook quantization): one 2^bits-entry codebook per weight matrix from
  k-means over its weights.
- `gobo` (Zadeh et al., 2020): weights further than `outlier_sigma` standard deviations from
  the matrix's mean stay in fp32; the Gaussian bulk shares a 2^bits-entry codebook (k-means).
- `powerquant` (Yvinec et al., 2023): non-uniform through a power function,
  Ŵ = sign(q)·|q|^(1/a), q = Q(sign(W)·|W|^a) with Q symmetric uniform per output channel; `a` from a grid,
  the one with the least ‖W − Ŵ‖².
"""
from __future__ import annotations

import torch
from torch import nn

from methods.act_quant import attach_act_quant
from methods.arch import weight_matrix
from methods.base import register
from methods.quant_base import QuantMethod
from methods.quantizer import FP16_BITS, QuantSpec, quantize_weight
from methods.squeezellm import weighted_kmeans_rows
from methods.stats import ACT_ABSMAX

FP32_BITS = 32


def codebook_quantize(values: torch.Tensor, bits: int, iters: int = 50) -> torch.Tensor:
    """Every value replaced by its nearest centroid of one k-means codebook (2^bits entries)."""
    flat = values.float().reshape(1, -1)
    cents, assign = weighted_kmeans_rows(flat, torch.ones_like(flat), 2 ** bits, iters)
    return torch.gather(cents, 1, assign).view_as(values)


def gaussian_outliers(W: torch.Tensor, sigma: float) -> torch.Tensor:
    w = W.float()
    return (w - w.mean()).abs() > sigma * w.std()


def power_quantize(W: torch.Tensor, bits: int, a: float) -> torch.Tensor:
    """sign(q)·|q|^(1/a) with q the symmetric per-channel quantization of sign(W)·|W|^a."""
    spec = QuantSpec(bits=bits, sym=True, granularity="channel")
    t = torch.sign(W.float()) * W.float().abs().pow(a)
    q = quantize_weight(t, spec).dequantize()
    return torch.sign(q) * q.abs().pow(1 / a)


@register("q8bert")
class Q8BERT(QuantMethod):
    stats = frozenset({ACT_ABSMAX})

    def __init__(self, wbits: int = 8, abits: int = 8):
        super().__init__(wbits, True, -1, "tensor", "minmax", abits=abits)
        self.abits = abits

    def compress(self, block: int, name: str, layer: nn.Module, stats) -> None:
        W = weight_matrix(layer)
        qmax = 2 ** (self.spec.bits - 1) - 1
        scale = W.abs().max().clamp(min=1e-8) / qmax
        W.copy_((torch.clamp(torch.round(W / scale), -qmax, qmax) * scale).to(W.dtype))
        self.account(block, name, *W.shape, n_groups=0, extra_bits=FP32_BITS)
        attach_act_quant(layer, self.abits, "per_tensor", float(stats.act_absmax.max()))

    def summary(self):
        return {**super().summary(), "abits": self.abits, "act_mode": "per_tensor"}


@register("kmeans_quant")
class KMeansQuant(QuantMethod):
    def __init__(self, wbits: int = 3, iters: int = 50):
        super().__init__(wbits, False, -1, "tensor", "minmax", iters=iters)
        self.iters = iters

    def compress(self, block: int, name: str, layer: nn.Module, stats=None) -> None:
        W = weight_matrix(layer)
        W.copy_(codebook_quantize(W, self.spec.bits, self.iters).to(W.dtype))
        self.account(block, name, *W.shape, n_groups=0, extra_bits=2 ** self.spec.bits * FP32_BITS)

    def summary(self):
        return {**super().summary(), "granularity": "codebook-per-matrix"}


@register("gobo")
class GOBO(QuantMethod):
    def __init__(self, wbits: int = 3, outlier_sigma: float = 4.0, iters: int = 50):
        super().__init__(wbits, False, -1, "tensor", "minmax", outlier_sigma=outlier_sigma, iters=iters)
        self.sigma, self.iters = outlier_sigma, iters
        self.outliers = 0

    def compress(self, block: int, name: str, layer: nn.Module, stats=None) -> None:
        W = weight_matrix(layer)
        out = gaussian_outliers(W, self.sigma)
        Q = W.float().clone()
        Q[~out] = codebook_quantize(W.float()[~out], self.spec.bits, self.iters)
        W.copy_(Q.to(W.dtype))
        n_out = int(out.sum())
        self.outliers += n_out
        # inliers: codes; outliers: fp32 value + 32-bit position (and no code); the fp32 codebook
        self.account(block, name, *W.shape, n_groups=0,
                     extra_bits=n_out * (2 * FP32_BITS - self.spec.bits) + 2 ** self.spec.bits * FP32_BITS)

    def summary(self):
        weights = sum(n for _, n in self.ledger.values())
        return {**super().summary(), "granularity": "codebook-per-matrix", "outliers": self.outliers,
                "outlier_fraction": self.outliers / weights if weights else 0.0}


@register("powerquant")
class PowerQuant(QuantMethod):
    def __init__(self, wbits: int = 4, grid: list[float] | None = None):
        grid = grid or [round(0.05 * i, 2) for i in range(4, 21)]  # a in 0.20 … 1.00 (1.0 = uniform)
        super().__init__(wbits, True, -1, "channel", "minmax", grid=grid)
        self.grid = grid
        self.exponents: dict[str, float] = {}

    def compress(self, block: int, name: str, layer: nn.Module, stats=None) -> None:
        W = weight_matrix(layer)
        errs = {a: float((power_quantize(W, self.spec.bits, a) - W.float()).pow(2).sum()) for a in self.grid}
        a = min(errs, key=errs.get)
        self.exponents[f"{block}.{name}"] = a
        W.copy_(power_quantize(W, self.spec.bits, a).to(W.dtype))
        self.account(block, name, *W.shape, stat_bits=FP16_BITS)

    def summary(self):
        return {**super().summary(), "granularity": "channel (power-function grid)", "exponents": self.exponents}
