"""GemLite (github.com/mobiusml/gemlite, Triton): weight-only kernels for grouped 1/2/4/8-bit integer
codes in bf16/fp16 (A16Wn), with GEMV kernels for 1..4 tokens and split-K GEMV/GEMM kernels
above, which GemLite picks per call by the token count. CUDA only: GemLite reads the device when
it is imported. An optional dependency (the project's `gpu` extra, installable from wheels).

Not a record format of its own: it is one of the kernels that `kernels/routing.py` times against
a format's own kernel for the same codes (int4, packed, int8).

The method's codes are handed over as they are (`gemlite_inputs`), never re-quantized:
  - W = s · (q − z) per (row, group) is GemLite's asymmetric mode (it stores −z · s and computes
    q · s + (−z · s)), with s and z in the activations' dtype;
  - act-order groups (GPTQ's g_idx) become contiguous by permuting the columns of the codes and
    the input (one gather per call), where every group holds `group_size` columns;
  - per-channel codes repeat their row's scale and zero over groups of up to 128 columns (the
    same numbers: GemLite's channel-wise mode takes no zero point);
  - 3-bit codes run through the 4-bit kernel, labelled "3-bit codes in a 4-bit kernel", with the
    4-bit bytes counted.
"""
from __future__ import annotations

import torch

from kernels.formats.base import WeightFormat, code_kernel
from methods.quantization.quantizer import QuantizedTensor

GEMLITE_BITS = (1, 2, 4, 8)
MIN_K = 32          # GemLite wants in_features divisible by 32 and by the group size
MIN_GROUP = 16


def gemlite_inputs(qt: QuantizedTensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, int, int]:
    """The codes (rows, cols) uint8, scale and zero (rows, cols // group), the input permutation
    (None: the columns' own order), the kernel's bit width and its group size, for these codes
    as they are; ValueError for codes GemLite cannot take."""
    rows, cols = qt.shape
    bits = qt.bits if qt.bits in GEMLITE_BITS else 4 if qt.bits == 3 else None
    if bits is None:
        raise ValueError(f"GemLite takes 1/2/4/8-bit codes (3-bit in its 4-bit kernel), got {qt.bits}-bit")
    _check_in_features(cols)
    codes, scale, zero = qt.codes, qt.scale, qt.zero
    if qt.scale.shape[1] == 1:      # one scale and zero per row: repeated over groups
        group = next(g for g in (128, 64, 32) if cols % g == 0)
        scale, zero = scale.expand(rows, cols // group), zero.expand(rows, cols // group)
        return codes.to(torch.uint8), scale, zero, None, bits, group
    group = qt.group_size
    if group < MIN_GROUP or cols % group:
        raise ValueError(f"GemLite takes groups of at least {MIN_GROUP} columns that divide in_features, got {group}")
    perm = qt.contiguous_order()
    if perm is not None:
        codes = codes[:, perm]
    return codes.to(torch.uint8), scale, zero, perm, bits, group


def _check_in_features(cols: int) -> None:
    if cols % MIN_K:
        raise ValueError(f"GemLite wants in_features divisible by {MIN_K}, got {cols}")


_CONFIG_LOADED = False


def _library():
    """gemlite, with its tuned kernel configs loaded: GemLite ships them per chip name and has
    none for the H200, which is the H100's SM90, so a Hopper chip without its own takes the H100's
    (else every shape would be autotuned at its first call)."""
    global _CONFIG_LOADED
    import gemlite
    if not _CONFIG_LOADED:
        _CONFIG_LOADED = True
        from pathlib import Path
        name = torch.cuda.get_device_properties(0).name.lower().replace(" ", "_")
        configs = Path(gemlite.__file__).parent / "configs"
        if torch.cuda.get_device_capability(0) == (9, 0) and not any(p.stem in name for p in configs.glob("*.json")):
            gemlite.GemLiteLinear.load_config(str(configs / "h100.json"))
    return gemlite


@code_kernel
class GemLite(WeightFormat):
    """A16Wn through GemLite's Triton kernels, from the method's own codes (`gemlite_inputs`)."""

    name = "gemlite"

    def __init__(self, qt: QuantizedTensor, device: torch.device, dtype: torch.dtype):
        device = torch.device(device)
        if device.type != "cuda":
            raise ValueError("GemLite runs on CUDA only")
        codes, scale, zero, perm, bits, group = gemlite_inputs(qt)
        gemlite = _library()       # ImportError where the `gpu` extra is not installed
        super().__init__(*qt.shape, device)
        self.dtype = dtype if dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
        gdt = gemlite.DType.BF16 if self.dtype == torch.bfloat16 else gemlite.DType.FP16
        self.linear = gemlite.GemLiteLinearTriton(bits, group_size=group, in_features=self.in_features,
                                                  out_features=self.out_features, input_dtype=gdt, output_dtype=gdt)
        self.linear.pack(codes.to(device), scale.to(device, self.dtype).contiguous(),
                         zero.to(device, self.dtype).contiguous(), bias=None)
        self.perm = perm.to(device) if perm is not None else None
        self.bits, self.group = bits, group
        self.codes = qt.to(device)
        self.backend = f"gemlite A16W{bits} (Triton)" + (": 3-bit codes in a 4-bit kernel" if qt.bits == 3 else "")

    def matmul(self, x):
        dt = x.dtype
        if self.perm is not None:
            x = x.index_select(-1, self.perm)
        return self.linear(x.to(self.dtype)).to(dt)

    def dequantize(self):
        return self.codes.dequantize()

    @property
    def weight_bytes(self):
        groups = self.in_features // self.group
        return self.out_features * self.in_features * self.bits // 8 + 2 * 2 * self.out_features * groups


class GemLiteA8W8(WeightFormat):
    """W8A8 through GemLite's int8 × int8 Triton GEMM: symmetric 8-bit weight codes with one scale
    per row, activations quantized per token on the fly (amax / 127, rounded: what the layer's
    per-token quantizer computes, in fp32 where it computes in the activations' dtype)."""

    name = "gemlite-a8w8"

    def __init__(self, qt: QuantizedTensor, act, device: torch.device, dtype: torch.dtype):
        device = torch.device(device)
        if device.type != "cuda":
            raise ValueError("GemLite runs on CUDA only")
        if qt.bits != 8 or qt.scale.shape[1] != 1 or qt.g_idx is not None or bool((qt.zero != 128).any()):
            raise ValueError("GemLite's A8W8 takes symmetric 8-bit codes with one scale per row")
        if act.bits != 8 or act.mode != "per_token":
            raise ValueError("GemLite's A8W8 quantizes activations per token to 8 bits, the layer does not")
        _check_in_features(qt.shape[1])
        gemlite = _library()
        super().__init__(*qt.shape, device)
        self.dtype = dtype if dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
        q = (qt.codes.to(device, torch.int16) - 128).to(torch.int8)
        self.linear = gemlite.helper.A8W8_int8_dynamic(device=str(device), dtype=self.dtype).from_weights(
            weight=q, bias=None, scales=qt.scale[:, :1].to(device, torch.float32))
        self.codes = qt.to(device)
        self.backend = "gemlite A8W8 int8 (Triton)"

    def matmul(self, x):
        return self.linear(x.to(self.dtype)).to(x.dtype)

    def dequantize(self):
        return self.codes.dequantize()

    @property
    def weight_bytes(self):
        return self.out_features * self.in_features + 4 * self.out_features
