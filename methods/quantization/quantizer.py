"""Uniform affine quantization (the GPTQ reference `Quantizer` semantics), packing, and the
stored-bits accounting behind the survey's compression rate.

Codes are integers in [0, 2^bits - 1]; a value x maps to q = clamp(round(x / s) + z, 0, maxq)
and back to s · (q - z). Min-max ranges always include 0 (as in GPTQ), symmetric quantization
uses z = (maxq + 1) / 2, asymmetric z = round(-min / s). `clip="mse"` shrinks the range on a
grid and keeps the scale with the least |x - x̂|^2.4 error (GPTQ's `mse=True`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

GRANULARITIES = ("tensor", "channel", "group")
FP16_BITS = 16


@dataclass(frozen=True)
class QuantSpec:
    bits: int = 4
    sym: bool = False
    granularity: str = "channel"  # tensor | channel (per output row) | group (per row, `group_size` inputs)
    group_size: int = 128
    clip: str = "minmax"  # minmax | mse
    mse_grid: int = 100
    mse_maxshrink: float = 0.8
    mse_norm: float = 2.4

    def __post_init__(self):
        if not 2 <= self.bits <= 8:
            raise ValueError(f"bit width must be 2..8, got {self.bits}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got '{self.granularity}'")
        if self.granularity == "group" and self.group_size <= 0:
            raise ValueError(f"group_size must be positive, got {self.group_size}")
        if self.clip not in ("minmax", "mse"):
            raise ValueError(f"clip must be 'minmax' or 'mse', got '{self.clip}'")

    @property
    def maxq(self) -> int:
        return 2 ** self.bits - 1

    @classmethod
    def from_knobs(cls, wbits: int = 4, sym: bool = False, group_size: int | None = None,
                   granularity: str | None = None, clip: str = "minmax") -> "QuantSpec":
        """`group_size` > 0 implies per-group; null/-1 per-channel unless `granularity` says otherwise."""
        if not 2 <= int(wbits) <= 8:
            raise ValueError(f"method.wbits={wbits} is out of range for this quantizer: it must be an integer "
                             f">= 2 and <= 8")
        if granularity is None:
            granularity = "group" if group_size and group_size > 0 else "channel"
        return cls(bits=int(wbits), sym=bool(sym), granularity=granularity,
                   group_size=int(group_size) if group_size and group_size > 0 else 128, clip=clip)


def quantize(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, maxq: int) -> torch.Tensor:
    """Integer codes of x (as float tensor)."""
    return torch.clamp(torch.round(x / scale) + zero, 0, maxq)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    return scale * (q - zero)


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, maxq: int) -> torch.Tensor:
    return dequantize(quantize(x, scale, zero, maxq), scale, zero)


def find_params(x: torch.Tensor, spec: QuantSpec, per_row: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point for each row of x (shape (rows, 1)), or one pair for the whole x."""
    x = x.float()
    rows = x if per_row else x.reshape(1, -1)
    zeros = torch.zeros(rows.shape[0], device=x.device)
    xmin = torch.minimum(rows.min(1)[0], zeros)
    xmax = torch.maximum(rows.max(1)[0], zeros)
    if spec.sym:
        xmax = torch.maximum(xmin.abs(), xmax)
        xmin = torch.where(xmin < 0, -xmax, xmin)
    empty = (xmin == 0) & (xmax == 0)
    xmin[empty], xmax[empty] = -1.0, 1.0
    scale, zero = _scale_zero(xmin, xmax, spec)
    if spec.clip == "mse":
        best = torch.full_like(scale, float("inf"))
        for i in range(int(spec.mse_maxshrink * spec.mse_grid)):
            p = 1 - i / spec.mse_grid
            s1, z1 = _scale_zero(p * xmin, p * xmax, spec)
            err = (fake_quantize(rows, s1[:, None], z1[:, None], spec.maxq) - rows).abs_().pow_(spec.mse_norm).sum(1)
            better = err < best
            best[better], scale[better], zero[better] = err[better], s1[better], z1[better]
    return scale[:, None], zero[:, None]


def _scale_zero(xmin: torch.Tensor, xmax: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    scale = (xmax - xmin) / spec.maxq
    if spec.sym:
        zero = torch.full_like(scale, (spec.maxq + 1) / 2)
    else:
        zero = torch.round(-xmin / scale)
    return scale, zero


@dataclass
class QuantizedTensor:
    """Integer codes plus the scale/zero of each (row, group); dequantizes to the fake-quant weight.

    `g_idx` gives each column's group where the groups are not runs of `group_size` consecutive
    columns (GPTQ's act-order fits groups in the order of decreasing Hessian diagonal)."""

    codes: torch.Tensor   # (rows, cols) integer values in [0, maxq], uint8
    scale: torch.Tensor   # (rows, n_groups)
    zero: torch.Tensor    # (rows, n_groups)
    group_size: int       # columns per group (cols for per-channel / per-tensor)
    bits: int
    g_idx: torch.Tensor | None = None  # (cols,) group of each column; None: column // group_size

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.codes.shape)

    def groups(self) -> torch.Tensor:
        """The group index of every column."""
        if self.g_idx is not None:
            return self.g_idx
        return torch.arange(self.codes.shape[1], device=self.codes.device) // self.group_size

    def contiguous_order(self) -> torch.Tensor | None:
        """The column order that turns act-order groups into runs of `group_size` consecutive
        columns, for kernels that find a column's scale at column // group_size (None: the columns'
        own order already is); ValueError where a group but the last holds another number of columns."""
        if self.g_idx is None:
            return None
        counts = torch.bincount(self.g_idx, minlength=self.scale.shape[1])
        if bool((counts[:-1] != self.group_size).any()):
            raise ValueError("act-order groups must hold exactly group_size columns (GPTQ's act_order)")
        return torch.argsort(self.g_idx, stable=True)

    def dequantize(self) -> torch.Tensor:
        g = self.groups().to(self.scale.device)
        return dequantize(self.codes.float(), self.scale[:, g].float(), self.zero[:, g].float())

    def to(self, device: torch.device | str) -> "QuantizedTensor":
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return t.to(device) if t is not None else None
        return QuantizedTensor(move(self.codes), move(self.scale), move(self.zero), self.group_size, self.bits,
                               move(self.g_idx))


# The codes a quantizer chose for a linear ride on the module under this attribute (not in its
# state dict), so that kernels.convert can pack them; the weight itself holds their dequantized values.
CODES_ATTR = "quantized_codes"


def keep_codes(layer: torch.nn.Module, qt: QuantizedTensor, device: torch.device | str = "cpu") -> None:
    """Attach a linear's codes, on the CPU by default: they outlive the block's turn on the device
    (a model compressed where it runs, as the kernel benchmark's, keeps them there)."""
    setattr(layer, CODES_ATTR, qt.to(device))


def kept_codes(layer: torch.nn.Module) -> QuantizedTensor | None:
    return getattr(layer, CODES_ATTR, None)


def quantize_weight(W: torch.Tensor, spec: QuantSpec) -> QuantizedTensor:
    """Round-to-nearest quantization of an (out, in) weight at the spec's granularity."""
    W = W.float()
    rows, cols = W.shape
    if spec.granularity == "tensor":
        s, z = find_params(W, spec, per_row=False)
        s, z, g = s.expand(rows, 1).clone(), z.expand(rows, 1).clone(), cols
    elif spec.granularity == "channel":
        (s, z), g = find_params(W, spec), cols
    else:
        g = spec.group_size
        pairs = [find_params(W[:, i:i + g], spec) for i in range(0, cols, g)]
        s, z = torch.cat([p[0] for p in pairs], 1), torch.cat([p[1] for p in pairs], 1)
    S = s.repeat_interleave(g, dim=1)[:, :cols]
    Z = z.repeat_interleave(g, dim=1)[:, :cols]
    codes = quantize(W, S, Z, spec.maxq).to(torch.uint8)
    return QuantizedTensor(codes, s, z, g, spec.bits)


# ---------------------------------------------------------------------------------------------
# Packing: `bits`-bit codes into int32 words, row-major, little-endian within a word
# ---------------------------------------------------------------------------------------------

def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack non-negative integer codes (any shape) into a flat int32 tensor, 32 // bits per word
    (3-, 5-, 6- and 7-bit codes leave the word's top bits unused)."""
    per = 32 // bits
    flat = codes.flatten().to(torch.int64)
    if flat.numel() and (flat.min() < 0 or flat.max() >= 2 ** bits):
        raise ValueError(f"codes out of range for {bits} bits")
    pad = (-flat.numel()) % per
    flat = torch.cat([flat, flat.new_zeros(pad)]).view(-1, per)
    shifts = torch.arange(per, dtype=torch.int64, device=flat.device) * bits
    words = (flat << shifts).sum(1)
    return torch.where(words >= 2 ** 31, words - 2 ** 32, words).to(torch.int32)


def unpack(words: torch.Tensor, bits: int, shape: tuple[int, ...]) -> torch.Tensor:
    per = 32 // bits
    w = words.to(torch.int64) & 0xFFFFFFFF
    shifts = torch.arange(per, dtype=torch.int64, device=w.device) * bits
    flat = ((w[:, None] >> shifts) & (2 ** bits - 1)).flatten()
    n = 1
    for d in shape:
        n *= d
    return flat[:n].view(shape).to(torch.uint8)


# ---------------------------------------------------------------------------------------------
# Stored bits (the survey's rate: 1 - stored bits / (16 x parameters))
# ---------------------------------------------------------------------------------------------

def stored_bits(rows: int, cols: int, bits: float, n_groups_per_row: int, stat_bits: float = 2 * FP16_BITS,
                extra_bits: float = 0.0) -> float:
    """Codes + per-group statistics (an fp16 scale and zero by default) + anything kept aside
    (outliers, fp16 columns, codebooks)."""
    return rows * cols * bits + rows * n_groups_per_row * stat_bits + extra_bits


def groups_per_row(spec: QuantSpec, cols: int) -> float:
    if spec.granularity == "tensor":
        return 0.0  # one pair for the whole matrix: QuantMethod.account adds it once
    if spec.granularity == "channel":
        return 1.0
    return float(-(-cols // spec.group_size))
