"""A newcomer's kernel format, kept beside the tests (a real one lives under kernels/formats/):
weights stored in fp16 and computed in the activations' dtype. Nothing but a toy."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kernels.formats.base import Case, KernelFormat, WeightFormat, dense_bytes, register_format
from methods.core.arch import weight_matrix


class Half(WeightFormat):
    name, backend = "fp16w", "F.linear (fp16 weights, upcast per call)"

    def __init__(self, weight: torch.Tensor, device: torch.device):
        super().__init__(*weight.shape, device)
        self.weight = weight.detach().to(device, torch.float16)

    def matmul(self, x):
        return F.linear(x, self.weight.to(x.dtype))

    def dequantize(self):
        return self.weight.float()

    @property
    def weight_bytes(self):
        return self.weight.numel() * 2


@register_format
@dataclass(frozen=True)
class HalfFormat(KernelFormat):
    """Records of 16-bit weight-only quantization."""

    name = "fp16w"
    order = 5

    @classmethod
    def for_record(cls, comp):
        return cls() if comp.get("kind") == "quantized" and comp.get("wbits") == 16 and not comp.get("abits") else None

    def layer(self, layer, path, W, device, dtype):
        return Half(W, device), None

    def compress(self, layer):
        W = weight_matrix(layer)
        W.copy_(W.half().to(W.dtype))

    def case(self, W, dtype):
        fmt = Half(W, W.device)
        return Case(fmt.matmul, fmt.dequantize(), fmt.weight_bytes, 2 * W.numel(),
                    {"bandwidth": dense_bytes(W, dtype) / fmt.weight_bytes, "flops": 1.0}, fmt.backend)
