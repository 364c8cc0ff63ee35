"""Weight formats with a fast matmul: each holds one linear's weight in its storage layout and
computes y = x · Wᵀ (x of shape (tokens, in)) with a real kernel on the device it was built for.

    int8        symmetric per-channel codes   torch._weight_int8pack_mm (CPU, CUDA)
    w8a8        int8 weights and activations  torch._int_mm (CPU, CUDA): the activations quantized
                (SmoothQuant, Q8BERT, W8A8)   on the fly as the layer's quantizer does
    int4        4-bit codes, groups 32..256   torch._weight_int4pack_mm (CUDA, tinygemm) and
                                              torch._weight_int4pack_mm_for_cpu
    packed      2..8-bit codes in `pack`'s    the project's Triton kernel (CUDA, or the CPU under
                layout, any groups, g_idx     TRITON_INTERPRET=1); elsewhere dequantized per call
                                              in PyTorch (backend 'torch-dequant', slow, honest)
    csr         unstructured zeros            torch.sparse.mm on a CSR matrix (fp32)
    2:4         two nonzeros in every 4       torch.sparse.to_sparse_semi_structured (CUDA;
                                              CUTLASS or cuSPARSELt)
    dense       the weight as it is           F.linear (the baseline; structured pruning's
                                              smaller matrices are this format)

Every format dequantizes back to the fp32 weight it computes with (`dequantize`), which is what
the tests compare its output against. `weight_bytes` is what one matmul must read of the weight:
the bound of a memory-bound decode step.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kernels import triton_packed
from methods.quantization.act_quant import ActQuantSpec
from methods.quantization.quantizer import QuantizedTensor, pack, unpack

# the backend of packed codes where no kernel runs them: dequantized to a dense matrix per call
NO_KERNEL_BACKEND = "torch-dequant"

INT4_GROUPS = (32, 64, 128, 256)   # what tinygemm's int4 kernels take
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


def on_device(device: torch.device | str) -> torch.device:
    """The device with its index ("cuda" -> "cuda:0"), so it compares equal to a tensor's device."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


class WeightFormat:
    """One linear's weight in a kernel's layout."""

    name = "dense"
    backend = "F.linear"

    def __init__(self, out_features: int, in_features: int, device: torch.device):
        self.out_features, self.in_features, self.device = out_features, in_features, on_device(device)

    def matmul(self, x: torch.Tensor) -> torch.Tensor:  # (tokens, in) -> (tokens, out)
        raise NotImplementedError

    def dequantize(self) -> torch.Tensor:  # (out, in) fp32
        raise NotImplementedError

    @property
    def weight_bytes(self) -> int:
        raise NotImplementedError


class Dense(WeightFormat):
    def __init__(self, weight: torch.Tensor):
        super().__init__(*weight.shape, weight.device)
        self.weight = weight

    def matmul(self, x):
        return F.linear(x, self.weight)

    def dequantize(self):
        return self.weight.float()

    @property
    def weight_bytes(self):
        return self.weight.numel() * self.weight.element_size()


def _single_group(qt: QuantizedTensor) -> bool:
    return qt.scale.shape[1] == 1 and qt.g_idx is None


class Int8(WeightFormat):
    """Symmetric 8-bit codes, W = s · (q − 128) per output row, through the int8 kernel. K is
    padded to a multiple of 16 with zero columns: torch 2.13's CPU kernel with bf16 inputs crashes
    or returns garbage otherwise (tests/test_kernels.py holds it to the reference). Asymmetric
    codes would need s · (128 − z) · Σx added back, a large offset that cancels in a bf16 output:
    they take the packed format instead."""

    name, backend = "int8", "torch._weight_int8pack_mm"

    def __init__(self, qt: QuantizedTensor, device: torch.device, dtype: torch.dtype):
        if qt.bits != 8 or not _single_group(qt):
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


class W8A8(WeightFormat):
    """Symmetric 8-bit weights (one scale per row) and 8-bit activations quantized on the fly as
    the layer's activation quantizer does (per token, or static per tensor): y = s_x · s_w ·
    (q_x · q_wᵀ), the integer product accumulated exactly in int32 by torch._int_mm. On CUDA
    the kernel wants more than 16 rows and K, N multiples of 8: the input is padded to that."""

    name, backend = "w8a8", "torch._int_mm (int8 x int8 -> int32)"

    def __init__(self, qt: QuantizedTensor, act: ActQuantSpec, device: torch.device):
        if qt.bits != 8 or not _single_group(qt) or bool((qt.zero != 128).any()):
            raise ValueError("w8a8 takes symmetric 8-bit weight codes with one scale per row")
        if act.bits != 8:
            raise ValueError(f"w8a8 takes 8-bit activations, the layer quantizes them to {act.bits} bits")
        device = torch.device(device)
        super().__init__(*qt.shape, device)
        qt = qt.to(device)
        cuda = device.type == "cuda"
        self.k_pad = -qt.shape[1] % 8 if cuda else 0
        self.n_pad = -qt.shape[0] % 8 if cuda else 0
        q = F.pad(qt.codes.to(torch.int16) - 128, (0, self.k_pad, 0, self.n_pad)).to(torch.int8)
        self.q_t = q.t().contiguous()                      # (K, N): _int_mm's second operand
        self.scale = qt.scale[:, 0].float()
        self.act = act

    def matmul(self, x):
        q, sx = self.act.codes(x)   # in x's dtype, as the activation quantizer's hook computes them
        m = q.shape[0]
        pad_m = max(0, 17 - m) + (-max(m, 17) % 8) if self.device.type == "cuda" else 0
        if pad_m or self.k_pad:
            q = F.pad(q, (0, self.k_pad, 0, pad_m))
        acc = torch._int_mm(q.to(torch.int8), self.q_t)[:m, :self.out_features]
        sx = sx if isinstance(sx, float) else sx[:m].float()
        return (acc.float() * sx * self.scale).to(x.dtype)

    def dequantize(self):
        return self.q_t.t()[:self.out_features, :self.in_features].float() * self.scale[:, None]

    @property
    def weight_bytes(self):
        return self.out_features * self.in_features + 4 * self.scale.numel()


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
        if qt.g_idx is not None:
            order = torch.argsort(qt.g_idx, stable=True)
            counts = torch.bincount(qt.g_idx, minlength=scale.shape[1])
            if bool((counts[:-1] != g).any()):
                raise ValueError("int4 needs act-order groups of exactly group_size columns (GPTQ's act_order)")
            codes, self.perm = codes[:, order], order.to(device)
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


class CSR(WeightFormat):
    """Unstructured zeros as a CSR matrix, y = (W_csr · xᵀ)ᵀ through MKL's sparse GEMM (fp32 only)."""

    name, backend = "csr", "torch.sparse.mm (CSR)"

    def __init__(self, weight: torch.Tensor, device: torch.device, dtype: torch.dtype = torch.float32):
        super().__init__(*weight.shape, device)
        self.csr = weight.detach().to(device, torch.float32).to_sparse_csr()
        self.density = self.csr.values().numel() / max(1, weight.numel())

    def matmul(self, x):
        return torch.sparse.mm(self.csr, x.t().float()).t().to(x.dtype)

    def dequantize(self):
        return self.csr.to_dense()

    @property
    def weight_bytes(self):
        nnz = self.csr.values().numel()
        return nnz * 8 + (self.out_features + 1) * 8


def is_24(weight: torch.Tensor) -> bool:
    """At most two nonzeros in every group of four consecutive inputs."""
    if weight.shape[1] % 4:
        return False
    return bool(((weight.reshape(weight.shape[0], -1, 4) != 0).sum(-1) <= 2).all())


class Semi24(WeightFormat):
    """2:4 semi-structured sparsity through torch.sparse.to_sparse_semi_structured (CUDA, fp16/bf16)."""

    name = "2:4"

    def __init__(self, weight: torch.Tensor, device: torch.device, dtype: torch.dtype = torch.bfloat16,
                 backend: str = "cutlass"):
        from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured
        device = torch.device(device)
        if device.type != "cuda":
            raise ValueError("2:4 sparse kernels run on CUDA only (CUTLASS / cuSPARSELt); on a CPU use csr")
        if not is_24(weight):
            raise ValueError("the weight is not 2:4 sparse (at most 2 nonzeros in every 4 inputs)")
        super().__init__(*weight.shape, device)
        SparseSemiStructuredTensor._FORCE_CUTLASS = backend == "cutlass"
        self.dense = weight.detach().to(device, dtype)
        self.sparse = to_sparse_semi_structured(self.dense)
        self.backend = f"to_sparse_semi_structured ({backend})"

    def matmul(self, x):
        return F.linear(x, self.sparse)

    def dequantize(self):
        return self.dense.float()

    @property
    def weight_bytes(self):
        return self.dense.numel() * self.dense.element_size() // 2 + self.dense.numel() // 8


@dataclass
class Residual:
    """The weights a quantizer kept in full precision (OWQ's columns, SpQR's outliers) as a sparse
    fp32 difference to the codes' values, added to the kernel's output."""

    csr: torch.Tensor

    @classmethod
    def of(cls, weight: torch.Tensor, base: torch.Tensor, tol: float = 1e-6) -> "Residual | None":
        diff = weight.float() - base.float()
        diff[diff.abs() <= tol * weight.float().abs().clamp_min(1e-30)] = 0
        return cls(diff.to_sparse_csr()) if bool(diff.ne(0).any()) else None

    def to(self, device: torch.device) -> "Residual":
        return Residual(self.csr.to(device))

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sparse.mm(self.csr, x.t().float()).t().to(x.dtype)

    @property
    def nnz(self) -> int:
        return self.csr.values().numel()
