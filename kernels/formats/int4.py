"""int4: 4-bit codes in groups of 32..256 inputs, through tinygemm's torch._weight_int4pack_mm
(CUDA) and torch._weight_int4pack_mm_for_cpu."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kernels.formats.base import WeightFormat, code_kernel, register_format
from kernels.formats.packed import Packed
from kernels.formats.quantized import QuantizedFormat, uniform_codes
from methods.quantization.quantizer import QuantizedTensor

INT4_GROUPS = (32, 64, 128, 256)   # what tinygemm's int4 kernels take


@code_kernel
class Int4(WeightFormat):
    """tinygemm's int4: W = (q − 8) · s + m per (row, group of 32..256 inputs), where our
    s · (q − z) gives m = s · (8 − z). Act-order groups become contiguous by permuting the input
    (one gather per call); K and N are padded to the kernel's multiples with zero-weight columns
    and rows that the output drops."""

    name = "int4"

    def __init__(self, qt: QuantizedTensor, device: torch.device, dtype: torch.dtype):
        device = torch.device(device)
        rows, cols = qt.shape
        g = qt.group_size
        if qt.bits != 4 or g not in INT4_GROUPS:
            raise ValueError(f"int4 takes 4-bit codes in groups of {INT4_GROUPS}, got {qt.bits}-bit, group {g}")
        super().__init__(rows, cols, device)
        self.group = g
        self.perm = None
        qt = qt.to(device)   # pack where the kernel runs: a GPU packs a 7B model's codes in seconds
        codes, scale, zero = qt.codes, qt.scale.float(), qt.zero.float()
        order = qt.contiguous_order()
        if order is not None:
            codes, self.perm = codes[:, order], order
        cuda = device.type == "cuda"
        k_mult = math.lcm(g, 128 if cuda else g)   # CUDA packs K in tiles of innerKTiles · 16 = 128
        kp, np_ = -(-cols // k_mult) * k_mult, -(-rows // (8 if cuda else 16)) * (8 if cuda else 16)
        self.k_pad = kp - cols
        codes = F.pad(codes.to(torch.int32), (0, kp - cols, 0, np_ - rows), value=8)
        ng = kp // g
        scale = F.pad(scale, (0, ng - scale.shape[1], 0, np_ - rows), value=1.0)
        zero = F.pad(zero, (0, ng - zero.shape[1], 0, np_ - rows), value=8.0)
        self.dtype = torch.bfloat16 if cuda else dtype
        self.scales_and_zeros = torch.stack([scale, scale * (8 - zero)], -1).transpose(0, 1).contiguous().to(
            device, self.dtype)
        if cuda:
            u8 = codes.to(torch.uint8)
            self.packed = torch._convert_weight_to_int4pack((u8[:, ::2] << 4 | u8[:, 1::2]).contiguous(), 8)
            self.backend = "torch._weight_int4pack_mm (tinygemm)"
        else:
            self.packed = torch._convert_weight_to_int4pack_for_cpu(codes.contiguous(), 1)
            self.backend = "torch._weight_int4pack_mm_for_cpu"
        self._codes = codes[:rows, :cols].to(torch.uint8)   # in the kernel's column order, for `dequantize`

    def matmul(self, x):
        if self.perm is not None:
            x = x.index_select(-1, self.perm)
        if self.k_pad:
            x = F.pad(x, (0, self.k_pad))
        dt = x.dtype
        x = x.to(self.dtype)
        if self.device.type == "cuda":
            y = torch._weight_int4pack_mm(x, self.packed, self.group, self.scales_and_zeros)
        else:
            y = torch._weight_int4pack_mm_for_cpu(x, self.packed, self.group, self.scales_and_zeros)
        return y[:, :self.out_features].to(dt)

    def dequantize(self):
        sz = self.scales_and_zeros.float()[:, :self.out_features]
        idx = torch.arange(self.in_features, device=self.device) // self.group
        w = (self._codes.to(self.device).float() - 8) * sz[idx, :, 0].t() + sz[idx, :, 1].t()
        if self.perm is not None:
            w = w[:, torch.argsort(self.perm)]
        return w

    @property
    def weight_bytes(self):
        return self.out_features * self.in_features // 2 + self.scales_and_zeros.numel() * 2


@register_format
@dataclass(frozen=True)
class Int4Format(QuantizedFormat):
    name = "int4"
    order = 30

    @classmethod
    def for_record(cls, comp):
        codes = uniform_codes(comp)
        return cls(4, codes[1]) if codes is not None and codes[0] == 4 and codes[1] in INT4_GROUPS else None

    def layout(self, qt, device, dtype):
        return Int4(qt, device, dtype)

    def codes_format(self, qt, layer, path, device, dtype):
        if qt.group_size in INT4_GROUPS:
            try:
                return Int4(qt, device, dtype)
            except ValueError:
                pass   # act-order groups of uneven size: the packed kernel reads g_idx directly
        return Packed(qt, device, dtype)
