"""Codebook weight quantizers of the encoder table (Table 4), no calibration statistics needed.

- `kmeans_quant` (codebook quantization): one 2^bits-entry codebook per weight matrix from
  k-means over its weights.
- `gobo` (Zadeh et al., 2020): weights further than `outlier_sigma` standard deviations from
  the matrix's mean stay in fp32; the Gaussian bulk shares a 2^bits-entry codebook (k-means).
"""
from __future__ import annotations

import torch
from torch import nn

from methods.core.arch import weight_matrix
from methods.core.base import TableRow, register
from methods.quantization.base import QuantMethod
from methods.quantization.squeezellm import weighted_kmeans_rows
from methods.core.settings import Bits, Count

FP32_BITS = 32


def codebook_quantize(values: torch.Tensor, bits: int, iters: int = 50) -> torch.Tensor:
    """Every value replaced by its nearest centroid of one k-means codebook (2^bits entries)."""
    flat = values.float().reshape(1, -1)
    cents, assign = weighted_kmeans_rows(flat, torch.ones_like(flat), 2 ** bits, iters)
    return torch.gather(cents, 1, assign).view_as(values)


def gaussian_outliers(W: torch.Tensor, sigma: float) -> torch.Tensor:
    w = W.float()
    return (w - w.mean()).abs() > sigma * w.std()


@register("kmeans_quant")
class KMeansQuant(QuantMethod):
    rows = {"table4": TableRow("K-means Quant. (post-training)", "175", uniform="NUQ")}

    def __init__(self, wbits: Bits = 3, iters: Count = 50, nominal_base: int | None = None):
        super().__init__(wbits, False, -1, "tensor", "minmax", nominal_base)
        self.iters = iters

    def compress(self, block_index: int, name: str, layer: nn.Module, stats=None) -> None:
        W = weight_matrix(layer)
        W.copy_(codebook_quantize(W, self.spec.bits, self.iters).to(W.dtype))
        self.account(block_index, name, *W.shape, n_groups=0, extra_bits=2 ** self.spec.bits * FP32_BITS)

    def summary(self):
        return {**super().summary(), "quant_granularity": "codebook-per-matrix"}


@register("gobo")
class GOBO(QuantMethod):
    rows = {"table4": TableRow("GOBO", "168", uniform="NUQ")}

    def __init__(self, wbits: Bits = 3, outlier_sigma: float = 4.0, iters: Count = 50):
        super().__init__(wbits, False, -1, "tensor", "minmax")
        self.sigma, self.iters = outlier_sigma, iters
        self.outliers = 0

    def compress(self, block_index: int, name: str, layer: nn.Module, stats=None) -> None:
        W = weight_matrix(layer)
        out = gaussian_outliers(W, self.sigma)
        Q = W.float().clone()
        Q[~out] = codebook_quantize(W.float()[~out], self.spec.bits, self.iters)
        W.copy_(Q.to(W.dtype))
        n_out = int(out.sum())
        self.outliers += n_out
        # inliers: codes; outliers: fp32 value + 32-bit position (and no code); the fp32 codebook
        self.account(block_index, name, *W.shape, n_groups=0,
                     extra_bits=n_out * (2 * FP32_BITS - self.spec.bits) + 2 ** self.spec.bits * FP32_BITS)

    def summary(self):
        weights = self.totals()[1]
        return {**super().summary(), "quant_granularity": "codebook-per-matrix", "outliers": self.outliers,
                "outlier_fraction": self.outliers / weights if weights else 0.0}
