"""KernelLinear: an nn.Linear whose weight lives in a kernel format (packed codes, int8/int4,
CSR, 2:4), plus the fp32 residual of weights a quantizer kept aside and the original bias."""
from __future__ import annotations

import torch
from torch import nn

from kernels.formats.base import Residual, WeightFormat


class KernelLinear(nn.Module):
    def __init__(self, weight: WeightFormat, bias: torch.Tensor | None = None, residual: Residual | None = None):
        super().__init__()
        self.weight_format, self.residual = weight, residual
        self.in_features, self.out_features = weight.in_features, weight.out_features
        self.bias = nn.Parameter(bias.detach().clone(), requires_grad=False) if bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device != self.weight_format.device:
            raise RuntimeError(f"this layer was converted for {self.weight_format.device}, the input is on "
                               f"{x.device}: call kernels.convert on the device the model runs on")
        flat = x.reshape(-1, self.in_features)
        y = self.weight_format.matmul(flat)
        if self.residual is not None:
            y = y + self.residual.matmul(flat)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.reshape(*x.shape[:-1], self.out_features)

    def dequantized_weight(self) -> torch.Tensor:
        """The fp32 (out, in) weight this layer computes with."""
        w = self.weight_format.dequantize().cpu()
        return w + self.residual.csr.to_dense().cpu() if self.residual is not None else w

    def extra_repr(self) -> str:
        f = self.weight_format
        extra = f", residual nnz={self.residual.nnz}" if self.residual is not None else ""
        return f"{self.in_features} -> {self.out_features}, {f.name} via {f.backend}{extra}"
