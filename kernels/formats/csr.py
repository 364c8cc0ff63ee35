"""sparse-<percent>: unstructured (or N:M off CUDA) zeros as a CSR matrix, through MKL's sparse
GEMM (torch.sparse.mm, fp32 only)."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from kernels.formats.base import Case, KernelFormat, WeightFormat, dense_bytes, numbered, register_format
from methods.core.arch import weight_matrix

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
SPARSE_KINDS = ("unstructured", "n:m")


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


def prune_magnitude(W: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Zero the smallest-magnitude `sparsity` fraction of each row."""
    k = int(round(sparsity * W.shape[1]))
    if k == 0:
        return W.clone()
    idx = W.abs().argsort(dim=1)[:, :k]
    return W.clone().scatter_(1, idx, 0)


@register_format
@dataclass(frozen=True)
class CSRFormat(KernelFormat):
    name = "sparse"
    order = 60
    activation_dtype = "float32"           # MKL's and cuSPARSE's common sparse dtype

    sparsity: float = 0.5

    @property
    def key(self) -> str:
        return f"sparse-{round(100 * self.sparsity)}"

    @classmethod
    def parse(cls, key):
        pct = numbered(key, cls.name)
        return None if pct is None else cls(pct / 100)

    @classmethod
    def for_record(cls, comp):
        return cls(float(comp["comp_rate"])) if comp.get("kind") in SPARSE_KINDS else None

    def layer(self, layer, path, W, device, dtype):
        return CSR(W, device), None

    def compress(self, layer):
        W = weight_matrix(layer)
        W.copy_(prune_magnitude(W.float(), self.sparsity).to(W.dtype))

    def case(self, W, dtype):
        pruned = prune_magnitude(W, self.sparsity)
        fmt = CSR(pruned, W.device)
        nnz = int((pruned != 0).sum())
        return Case(fmt.matmul, pruned, fmt.weight_bytes, 2 * nnz,
                    {"bandwidth": dense_bytes(W, dtype) / fmt.weight_bytes, "flops": W.numel() / max(nnz, 1)},
                    fmt.backend)
