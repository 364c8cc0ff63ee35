"""packed: 2..8-bit codes in `pack`'s int32 words, any groups, act-order g_idx, through the
project's Triton kernel (CUDA, or the CPU under TRITON_INTERPRET=1); elsewhere dequantized per
call in PyTorch (backend 'torch-dequant': slow, and so given no speedup). The format of every
uniform integer record that int8 and int4 do not take."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kernels import triton_packed
from kernels.formats.base import NO_KERNEL_BACKEND, NoKernel, WeightFormat, code_kernel, register_format
from kernels.formats.quantized import QuantizedFormat, uniform_codes
from methods.quantization.quantizer import QuantizedTensor, pack, unpack


@code_kernel
class Packed(WeightFormat):
    """2..8-bit codes in `pack`'s int32 words, scale and zero per (row, group), g_idx per column."""

    name = "packed"

    def __init__(self, qt: QuantizedTensor, device: torch.device, dtype: torch.dtype):
        device = torch.device(device)
        super().__init__(*qt.shape, device)
        self.bits = qt.bits
        qt = qt.to(device)
        self.words = pack(qt.codes, qt.bits)
        # fp32 statistics: a few bytes per group, and the codes' values exactly
        self.scale = qt.scale.float().to(device).contiguous()
        self.zero = qt.zero.float().to(device).contiguous()
        self.g_idx = qt.groups().to(device, torch.int32).contiguous()
        self.backend = "triton (compbench packed_matmul)" if triton_packed.available(device) else NO_KERNEL_BACKEND
        self.emulated = device.type != "cuda"

    def matmul(self, x):
        if self.backend.startswith("triton"):
            return triton_packed.packed_matmul(x.contiguous(), self.words, self.scale, self.zero, self.g_idx,
                                               self.bits, self.out_features)
        return F.linear(x, self.dequantize().to(x.dtype))

    def dequantize(self):
        codes = unpack(self.words, self.bits, (self.out_features, self.in_features)).float()
        g = self.g_idx.long()
        return self.scale.float()[:, g] * (codes - self.zero.float()[:, g])

    @property
    def weight_bytes(self):
        return self.words.numel() * 4 + 2 * self.scale.numel() * self.scale.element_size() + self.g_idx.numel() * 4


@register_format
@dataclass(frozen=True)
class PackedFormat(QuantizedFormat):
    name = "packed"
    order = 40

    @classmethod
    def for_record(cls, comp):
        if comp.get("kind") != "quantized":
            return None
        codes = uniform_codes(comp)
        if codes is None:
            raise NoKernel(f"{comp.get('wbits')}-bit codes on a '{comp.get('quant_granularity')}' grid: the kernels "
                           "take uniform 2..8-bit integer codes per tensor, channel or group")
        return cls(*codes)

    def layout(self, qt, device, dtype):
        return Packed(qt, device, dtype)
