"""int8: symmetric 8-bit codes with one scale per row, through torch._weight_int8pack_mm (CPU, CUDA)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kernels.formats.base import WeightFormat, code_kernel, register_format
from kernels.formats.packed import Packed
from kernels.formats.quantized import QuantizedFormat, uniform_codes
from methods.quantization.quantizer import QuantizedTensor


def single_group(qt: QuantizedTensor) -> bool:
    return qt.scale.shape[1] == 1 and qt.g_idx is None


@code_kernel
class Int8(WeightFormat):
    """Symmetric 8-bit codes, W = s · (q − 128) per output row, through the int8 kernel. K is
    padded to a multiple of 16 with zero columns: torch 2.13's CPU kernel with bf16 inputs crashes
    or returns garbage otherwise (tests/test_kernels.py holds it to the reference). Asymmetric
    codes would need s · (128 − z) · Σx added back, a large offset that cancels in a bf16 output:
    they take the packed format instead."""

    name, backend = "int8", "torch._weight_int8pack_mm"

    def __init__(self, qt: QuantizedTensor, device: torch.device, dtype: torch.dtype):
        if qt.bits != 8 or not single_group(qt):
            raise ValueError(f"int8 takes 8-bit codes with one scale per row, got {qt.bits}-bit, "
                             f"{qt.scale.shape[1]} groups per row")
        if bool((qt.zero != 128).any()):
            raise ValueError("int8 takes symmetric codes (zero point 128); asymmetric 8-bit codes take 'packed'")
        super().__init__(*qt.shape, device)
        qt = qt.to(device)
        self.k_pad = -qt.shape[1] % 16
        self.q = F.pad(qt.codes.to(torch.int16) - 128, (0, self.k_pad)).to(torch.int8).to(device).contiguous()
        self.scale = qt.scale[:, 0].float().to(device, dtype)

    def matmul(self, x):
        return torch._weight_int8pack_mm(F.pad(x, (0, self.k_pad)) if self.k_pad else x, self.q, self.scale.to(x.dtype))

    def dequantize(self):
        return self.q[:, :self.in_features].float() * self.scale.float()[:, None]

    @property
    def weight_bytes(self):
        return self.out_features * self.in_features + self.scale.numel() * self.scale.element_size()


@register_format
@dataclass(frozen=True)
class Int8Format(QuantizedFormat):
    name = "int8"
    order = 20
    sym = True
    one_width = 8

    @classmethod
    def for_record(cls, comp):
        codes = uniform_codes(comp)
        return cls(8) if codes == (8, None) and comp.get("sym") else None

    def layout(self, qt, device, dtype):
        return Int8(qt, device, dtype)

    def codes_format(self, qt, layer, path, device, dtype):
        if single_group(qt) and bool((qt.zero == 128).all()):
            return Int8(qt, device, dtype)
        return Packed(qt, device, dtype)
