"""kernels.convert(model, record): swap a compressed model's linears for kernel-format layers.

The record (a result record, or its `compression` part) names its format through the format
registry (`kernels.formats.format_for`): uniform integer codes take int8, w8a8, int4 or packed;
unstructured and N:M zeros take 2:4 on CUDA where every layer is 2:4, else CSR; structured,
low-rank and distilled models keep their smaller dense matrices, which are their format.

Quantized layers need the codes their quantizer chose, which it keeps on each linear
(`methods.quantization.quantizer.keep_codes`) in the process that compressed the model; the
layer's weight (the dequantized codes, plus any fp16 outliers) is checked against the format's
dequantized weight, and weights kept in full precision become a sparse residual.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from kernels.formats import KernelFormat, Residual, format_for
from kernels.formats.base import NO_KERNEL_BACKEND
from kernels.linear import KernelLinear
from methods.core.arch import family_of, replace_module, weight_matrix


@dataclass
class Conversion:
    """What convert did: the format and backend of every swapped linear, and the largest relative
    difference between a layer's original weight and the weight its kernel computes with."""

    format: KernelFormat
    layers: dict[str, str] = field(default_factory=dict)
    max_weight_rel_err: float = 0.0
    residual_nnz: int = 0

    def no_kernel(self) -> str | None:
        """Why the converted model has no speed to measure: every layer's codes are dequantized per
        call, as no kernel on this device runs them; None where a kernel runs."""
        if self.layers and all(b == NO_KERNEL_BACKEND for b in self.layers.values()):
            return (f"no kernel for {self.format.key} on this device: its codes would be dequantized to a dense "
                    f"matrix per call ({NO_KERNEL_BACKEND}): no speed to measure")
        return None

    def to_record(self) -> dict[str, Any]:
        backends = sorted(set(self.layers.values()))
        return {"format": self.format.key, "backends": backends, "layers": len(self.layers),
                "max_weight_rel_err": self.max_weight_rel_err, "residual_nnz": self.residual_nnz}


@torch.no_grad()
def convert(model: nn.Module, record: dict[str, Any] | KernelFormat, device: torch.device | str | None = None,
            dtype: torch.dtype | None = None, route_tokens: Sequence[int] = ()) -> Conversion:
    """Swap every compressible linear of `model` for a KernelLinear in the record's format, on
    `device` (default: where the model is) with activations in `dtype` (default: the model's).
    `record` may also be the format itself (the benchmark's `kernels.formats.parse(key)`).
    `route_tokens`: route each layer by shape, timing every kernel that takes its weights at these
    token counts (kernels/routing.py); () runs the format's own kernel alone."""
    fmt = record if isinstance(record, KernelFormat) else format_for(record)
    if route_tokens:
        fmt = fmt.routed(route_tokens)
    first = next(model.parameters())
    device = torch.device(device) if device is not None else first.device
    dtype = dtype or first.dtype
    family = family_of(model.config.model_type)
    report = Conversion(fmt)
    if not fmt.swaps:
        return report
    blocks = family.blocks(model)
    prefix = next(n for n, m in model.named_modules() if m is blocks)
    layers = [(f"{prefix}.{i}.{name}", layer) for i, block in enumerate(blocks)
              for name, layer in family.linears(block).items()]
    here = fmt.on_device(device, [weight_matrix(m) for _, m in layers])
    for path, layer in layers:
        W = weight_matrix(layer).to(device)
        weights, base = here.layer(layer, path, W, device, dtype)
        residual = None
        if base is not None:   # the codes' values: what differs from them was kept aside
            residual = Residual.of(W, base, tol=max(1e-6, 2 * torch.finfo(W.dtype).eps))
            if residual is not None:
                report.residual_nnz += residual.nnz
        new = KernelLinear(weights, layer.bias.to(device) if getattr(layer, "bias", None) is not None else None,
                           residual)
        computed = weights.dequantize().to(device) + (residual.csr.to_dense() if residual is not None else 0)
        err = (computed - W.float()).norm() / W.float().norm().clamp_min(1e-30)
        report.max_weight_rel_err = max(report.max_weight_rel_err, float(err))
        report.layers[path] = weights.backend
        replace_module(model, path, new)
    return report
