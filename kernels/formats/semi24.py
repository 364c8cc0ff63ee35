"""2:4: two nonzeros in every four inputs, through torch.sparse.to_sparse_semi_structured (CUDA,
fp16/bf16; CUTLASS, or cuSPARSELt as `2:4-cusparselt`). Off CUDA, or where a layer is not 2:4,
its layers take CSR."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kernels.formats.base import Case, KernelFormat, WeightFormat, dense_bytes, register_format
from kernels.formats.csr import SPARSE_KINDS, CSRFormat
from methods.core.arch import weight_matrix

BACKENDS = ("cutlass", "cusparselt")


def is_24(weight: torch.Tensor) -> bool:
    """At most two nonzeros in every group of four consecutive inputs."""
    if weight.shape[1] % 4:
        return False
    return bool(((weight.reshape(weight.shape[0], -1, 4) != 0).sum(-1) <= 2).all())


def prune_24(W: torch.Tensor) -> torch.Tensor:
    g = W.reshape(W.shape[0], -1, 4)
    keep = torch.zeros_like(g, dtype=torch.bool).scatter_(-1, g.abs().topk(2, -1).indices, True)
    return (g * keep).reshape(W.shape)


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


@register_format
@dataclass(frozen=True)
class Semi24Format(KernelFormat):
    name = "2:4"
    order = 50
    needs_cuda = True

    backend: str = "cutlass"

    @property
    def key(self) -> str:
        return "2:4" if self.backend == "cutlass" else f"2:4-{self.backend}"

    @classmethod
    def parse(cls, key):
        head, _, backend = key.partition("-")
        return cls(backend or "cutlass") if head == cls.name and (backend or "cutlass") in BACKENDS else None

    @classmethod
    def for_record(cls, comp):
        kind = comp.get("kind")
        return cls() if kind in SPARSE_KINDS and comp.get("pattern", kind) == "2:4" else None

    def on_device(self, device, weights):
        if device.type == "cuda" and all(is_24(W) for W in weights):
            return self
        return CSRFormat(0.5)

    def layer(self, layer, path, W, device, dtype):
        return Semi24(W, device, dtype, self.backend), None

    def compress(self, layer):
        W = weight_matrix(layer)
        W.copy_(prune_24(W.float()).to(W.dtype))

    def case(self, W, dtype):
        pruned = prune_24(W)
        fmt = Semi24(pruned, W.device, dtype, self.backend)
        return Case(fmt.matmul, pruned, fmt.weight_bytes, W.numel(),
                    {"bandwidth": dense_bytes(W, dtype) / fmt.weight_bytes, "flops": 2.0}, fmt.backend)
