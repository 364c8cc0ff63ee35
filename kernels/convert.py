"""kernels.convert(model, record): swap a compressed model's linears for kernel-format layers.

The record (a result record, or its `compression` part) says which format the run produced:

    quantized, uniform integer codes   int8 (symmetric 8-bit, one scale per row), int4 (4-bit, groups of
                                       32..256), else packed (2..8 bits, any groups, act-order)
    unstructured / n:m zeros           2:4 on CUDA where every layer is 2:4, else CSR
    structured, low-rank, distilled    nothing to swap: the smaller dense matrices are the format

Quantized layers need the codes their quantizer chose, which it keeps on each linear
(`methods.quantization.quantizer.keep_codes`) in the process that compressed the model; the
layer's weight (the dequantized codes, plus any fp16 outliers) is checked against the format's
dequantized weight, and weights kept in full precision become a sparse residual.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from kernels.formats import CSR, INT4_GROUPS, W8A8, Int4, Int8, Packed, Residual, Semi24, WeightFormat, is_24
from kernels.linear import KernelLinear
from methods.core.arch import family_of, replace_module, weight_matrix
from methods.quantization.act_quant import ACT_ATTR
from methods.quantization.quantizer import QuantizedTensor, kept_codes

UNIFORM_GRANULARITIES = ("tensor", "channel", "group")


class NoKernel(ValueError):
    """The record's format has no kernel here (non-uniform codes, activations only, ...)."""


@dataclass(frozen=True)
class KernelSpec:
    """The storage format a record's compression produced."""

    format: str                  # int8 | w8a8 | int4 | packed | sparse | dense
    bits: int | None = None
    group: int | None = None     # None: one group per row
    sparsity: float | None = None
    pattern: str | None = None   # unstructured | 2:4 | 4:8 ...

    @property
    def key(self) -> str:
        """What the benchmark file's end-to-end entries are keyed by."""
        if self.format in ("int8", "w8a8"):
            return self.format
        if self.format in ("int4", "packed"):
            return f"{self.format}-w{self.bits}-" + (f"g{self.group}" if self.group else "ch")
        if self.format == "sparse":
            return "2:4" if self.pattern == "2:4" else f"sparse-{round(100 * self.sparsity)}"
        return "dense"


    @classmethod
    def parse(cls, key: str) -> "KernelSpec":
        """The inverse of `key`: int8, int4-w4-g128, packed-w3-ch, sparse-90, 2:4, dense."""
        head, *rest = key.split("-")
        fixed = {"int8": cls("int8", 8), "w8a8": cls("w8a8", 8), "dense": cls("dense"),
                 "2:4": cls("sparse", sparsity=0.5, pattern="2:4")}
        if key in fixed:
            return fixed[key]
        if head in ("int4", "packed") and len(rest) == 2 and rest[0].startswith("w"):
            group = None if rest[1] == "ch" else int(rest[1].lstrip("g"))
            return cls(head, int(rest[0][1:]), group)
        if head == "sparse" and len(rest) == 1:
            return cls("sparse", sparsity=int(rest[0]) / 100, pattern="unstructured")
        raise ValueError(f"unknown kernel format '{key}': int8, int4-w4-g<32..256>, packed-w<2..8>-<g<n>|ch>, "
                         "sparse-<percent>, 2:4 or dense")

    def compression(self) -> dict[str, Any]:
        """A record's `compression` entry that `spec_for` maps back to this format."""
        if self.format in ("int8", "int4", "packed", "w8a8"):
            return {"kind": "quantized", "wbits": self.bits, "group_size": self.group,
                    "sym": self.format in ("int8", "w8a8"), "quant_granularity": "group" if self.group else "channel",
                    **({"abits": 8} if self.format == "w8a8" else {})}
        if self.format == "sparse":
            return {"kind": "n:m" if self.pattern == "2:4" else "unstructured", "comp_rate": self.sparsity,
                    "pattern": self.pattern}
        return {"kind": "dense"}


def spec_for(record: dict[str, Any]) -> KernelSpec:
    """The kernel format of a record (or of its `compression` dict); NoKernel says why none fits."""
    comp = record.get("compression", record)
    kind = comp.get("kind")
    if kind == "quantized":
        bits, gran = comp.get("wbits"), comp.get("quant_granularity")
        if comp.get("abits") and comp["abits"] < 16:
            if comp["abits"] == 8 and bits == 8 and comp.get("sym") and gran in ("tensor", "channel"):
                return KernelSpec("w8a8", 8)
            raise NoKernel(f"W{bits}A{comp['abits']}: the activations are quantized too, and kernels/ runs "
                           "them only as W8A8 with one weight scale per row; a weight-only figure would not be "
                           "this row's speed")
        if gran not in UNIFORM_GRANULARITIES or bits is None or float(bits) != int(bits) or not 2 <= bits <= 8:
            raise NoKernel(f"{bits}-bit codes on a '{gran}' grid: the kernels take uniform 2..8-bit integer "
                           "codes per tensor, channel or group")
        bits = int(bits)
        group = comp.get("group_size") if gran == "group" else None
        if bits == 8 and group is None and comp.get("sym"):
            return KernelSpec("int8", 8)
        if bits == 4 and group in INT4_GROUPS:
            return KernelSpec("int4", 4, group)
        return KernelSpec("packed", bits, group)
    if kind in ("unstructured", "n:m"):
        return KernelSpec("sparse", sparsity=float(comp["comp_rate"]), pattern=comp.get("pattern", kind))
    if kind in ("structured", "low_rank", "distilled", "dense"):
        return KernelSpec("dense")
    raise NoKernel(f"compression kind '{kind}' has no kernel format")


@dataclass
class Conversion:
    """What convert did: the format and backend of every swapped linear, and the largest relative
    difference between a layer's original weight and the weight its kernel computes with."""

    spec: KernelSpec
    layers: dict[str, str] = field(default_factory=dict)
    max_weight_rel_err: float = 0.0
    residual_nnz: int = 0

    def to_record(self) -> dict[str, Any]:
        backends = sorted(set(self.layers.values()))
        return {"format": self.spec.key, "backends": backends, "layers": len(self.layers),
                "max_weight_rel_err": self.max_weight_rel_err, "residual_nnz": self.residual_nnz}


def _quantized(layer: nn.Module, name: str, spec: KernelSpec, device: torch.device, dtype: torch.dtype
               ) -> tuple[WeightFormat, QuantizedTensor]:
    qt = kept_codes(layer)
    if qt is None:
        raise ValueError(f"{name} holds no integer codes: a quantizer keeps them on each linear in the process "
                         "that compressed the model; convert right after compressing (engine.keep_codes=true)")
    if qt.bits != spec.bits:
        raise ValueError(f"{name} holds {qt.bits}-bit codes, the record says {spec.bits}")
    if spec.format == "w8a8":
        act = getattr(layer, ACT_ATTR, None)
        if act is None:
            raise ValueError(f"{name} quantizes no activations: the record says W8A8")
        return W8A8(qt, act, device), qt
    if spec.format == "int8" and qt.scale.shape[1] == 1 and bool((qt.zero == 128).all()):
        return Int8(qt, device, dtype), qt
    if spec.format == "int4" and qt.group_size in INT4_GROUPS:
        try:
            return Int4(qt, device, dtype), qt
        except ValueError:
            pass   # act-order groups of uneven size: the packed kernel reads g_idx directly
    return Packed(qt, device, dtype), qt


@torch.no_grad()
def convert(model: nn.Module, record: dict[str, Any] | KernelSpec, device: torch.device | str | None = None,
            dtype: torch.dtype | None = None, sparse_backend: str = "cutlass") -> Conversion:
    """Swap every compressible linear of `model` for a KernelLinear in the record's format, on
    `device` (default: where the model is) with activations in `dtype` (default: the model's).
    `record` may also name the format directly (a KernelSpec: the benchmark's packed-w4-g128)."""
    spec = record if isinstance(record, KernelSpec) else spec_for(record)
    first = next(model.parameters())
    device = torch.device(device) if device is not None else first.device
    dtype = dtype or first.dtype
    family = family_of(model.config.model_type)
    report = Conversion(spec)
    if spec.format == "dense":
        return report
    blocks = family.blocks(model)
    prefix = next(n for n, m in model.named_modules() if m is blocks)
    layers = [(f"{prefix}.{i}.{name}", layer) for i, block in enumerate(blocks)
              for name, layer in family.linears(block).items()]
    use_24 = spec.pattern == "2:4" and device.type == "cuda" and all(is_24(weight_matrix(m)) for _, m in layers)
    for path, layer in layers:
        W = weight_matrix(layer).to(device)
        residual = None
        if spec.format == "sparse":
            fmt = Semi24(W, device, dtype, sparse_backend) if use_24 else CSR(W, device)
        else:
            fmt, qt = _quantized(layer, path, spec, device, dtype)
            base = qt.to(device).dequantize()   # the codes' values: what differs from them was kept aside
            residual = Residual.of(W, base, tol=max(1e-6, 2 * torch.finfo(W.dtype).eps))
            if residual is not None:
                report.residual_nnz += residual.nnz
        new = KernelLinear(fmt, layer.bias.to(device) if getattr(layer, "bias", None) is not None else None, residual)
        computed = fmt.dequantize().to(device) + (residual.csr.to_dense() if residual is not None else 0)
        err = (computed - W.float()).norm() / W.float().norm().clamp_min(1e-30)
        report.max_weight_rel_err = max(report.max_weight_rel_err, float(err))
        report.layers[path] = fmt.backend
        replace_module(model, path, new)
    return report
