"""Kernel formats built from a dense weight, for timing: quantized formats from round-to-nearest
codes, sparse ones by magnitude, structured ones as the smaller dense matrices that head/neuron
removal (half the output rows) and a low-rank factorisation (half the parameters) leave.
The values only matter to the correctness check; the time depends on the format and shape."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from kernels.convert import KernelSpec
from kernels.formats import CSR, W8A8, Dense, Int4, Int8, Packed, Semi24
from methods.quantization.act_quant import ActQuantSpec
from methods.quantization.quantizer import QuantSpec, quantize_weight


@dataclass
class Case:
    fn: Callable[[torch.Tensor], torch.Tensor]
    reference: torch.Tensor     # the fp32 (out, in) weight the output is checked against
    weight_bytes: int           # what one call reads of the weight
    flops_per_token: float      # multiply-adds × 2 that the format actually computes
    ideal: dict[str, float]     # the best speedup over dense its bound allows: {'bandwidth', 'flops'}
    backend: str
    expected: Callable[[torch.Tensor], torch.Tensor] | None = None   # the output to match, where the
    # format also quantizes its input (w8a8): the fake-quantized activations through `reference`
    peak: str | None = None     # the matmul peak it is held to, where not its activations' (int8)


def quant_spec(spec: KernelSpec) -> QuantSpec:
    """Round-to-nearest codes of the format: symmetric for int8 (its kernel has no zero point)."""
    return QuantSpec(bits=spec.bits, sym=spec.format in ("int8", "w8a8"),
                     granularity="group" if spec.group else "channel", group_size=spec.group or 128)


def prune_magnitude(W: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Zero the smallest-magnitude `sparsity` fraction of each row."""
    k = int(round(sparsity * W.shape[1]))
    if k == 0:
        return W.clone()
    idx = W.abs().argsort(dim=1)[:, :k]
    return W.clone().scatter_(1, idx, 0)


def prune_24(W: torch.Tensor) -> torch.Tensor:
    g = W.reshape(W.shape[0], -1, 4)
    keep = torch.zeros_like(g, dtype=torch.bool).scatter_(-1, g.abs().topk(2, -1).indices, True)
    return (g * keep).reshape(W.shape)


def build(key: str, W: torch.Tensor, dtype: torch.dtype) -> Case:
    """The case `key` (a format key, or neurons-<p> / lowrank-<p>) for the fp32 weight W on W's device."""
    n, k = W.shape
    dev = W.device
    dense_bytes = n * k * torch.finfo(dtype).bits // 8
    head, _, arg = key.partition("-")
    if head == "neurons":                      # p% of the output rows removed (heads / neurons)
        keep = n - int(n * int(arg) / 100)
        fmt = Dense(W[:keep].to(dtype))
        return Case(fmt.matmul, W[:keep], fmt.weight_bytes, 2 * keep * k, {"bandwidth": n / keep, "flops": n / keep},
                    "F.linear (smaller matrix)")
    if head == "lowrank":                      # rank r keeping p% of the parameters: (n + k)·r = p·n·k
        r = max(1, int(n * k * int(arg) / 100 / (n + k)))
        A, B = (W[:r] / W.shape[1] ** 0.5).to(dtype), (W[:, :r] / r ** 0.5).to(dtype)
        return Case(lambda x: F.linear(F.linear(x, A), B), B.float() @ A.float(), (n + k) * r * dtype.itemsize,
                    2 * (n + k) * r, {"bandwidth": n * k / ((n + k) * r), "flops": n * k / ((n + k) * r)},
                    "F.linear x2 (factors)")
    if key.startswith("2:4"):
        backend = "cusparselt" if key.endswith("cusparselt") else "cutlass"
        pruned = prune_24(W)
        fmt = Semi24(pruned, dev, dtype, backend)
        return Case(fmt.matmul, pruned, fmt.weight_bytes, n * k, {"bandwidth": dense_bytes / fmt.weight_bytes,
                                                                  "flops": 2.0}, fmt.backend)
    spec = KernelSpec.parse(key)
    if spec.format == "w8a8":
        act = ActQuantSpec(8, "per_token")
        qt = quantize_weight(W, quant_spec(spec))
        fmt = W8A8(qt, act, dev)
        ref = qt.dequantize()
        return Case(fmt.matmul, ref, fmt.weight_bytes, 2 * n * k, {"bandwidth": dense_bytes / fmt.weight_bytes,
                                                                  "flops": 1.0}, fmt.backend,
                    expected=lambda x: act.fake(x).float() @ ref.t(), peak="int8")
    if spec.format == "sparse":
        pruned = prune_magnitude(W, spec.sparsity)
        fmt = CSR(pruned, dev)
        nnz = int((pruned != 0).sum())
        return Case(fmt.matmul, pruned, fmt.weight_bytes, 2 * nnz, {"bandwidth": dense_bytes / fmt.weight_bytes,
                                                                   "flops": n * k / max(nnz, 1)}, fmt.backend)
    qt = quantize_weight(W, quant_spec(spec))
    fmt = {"int8": Int8, "int4": Int4, "packed": Packed}[spec.format](qt, dev, dtype)
    return Case(fmt.matmul, qt.dequantize(), fmt.weight_bytes, 2 * n * k,
                {"bandwidth": dense_bytes / fmt.weight_bytes, "flops": 1.0}, fmt.backend)
