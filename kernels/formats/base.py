"""The kernel formats' common ground: a weight layout with a fast matmul (`WeightFormat`), the
fp32 residual of weights a quantizer kept aside, a benchmark case, and the registry of format
classes (`KernelFormat`), each owning its key, the records it accepts, how it builds one
linear's layout, how it gives a layer its form as a method would, and its benchmark case.

A record's format is found by asking the registered formats in their `order`; the first that
accepts the record's `compression` entry names it, and one may end the search by raising
NoKernel with the reason no kernel runs that record. Formats are found by walking this package
(plugin discovery): a new format is one module here, plus its key in conf/kernels_bench.yaml.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Sequence

import torch
from torch import nn

# the backend of packed codes where no kernel runs them: dequantized to a dense matrix per call
NO_KERNEL_BACKEND = "torch-dequant"


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
    emulated = False     # True: no kernel runs it here (per-call dequantization, Triton's CPU interpreter)

    def __init__(self, out_features: int, in_features: int, device: torch.device):
        self.out_features, self.in_features, self.device = out_features, in_features, on_device(device)

    def matmul(self, x: torch.Tensor) -> torch.Tensor:  # (tokens, in) -> (tokens, out)
        raise NotImplementedError

    def dequantize(self) -> torch.Tensor:  # (out, in) fp32
        raise NotImplementedError

    @property
    def weight_bytes(self) -> int:
        raise NotImplementedError


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


@dataclass
class Case:
    """One format's benchmark case for one weight: the call, what it is checked against and its bounds."""

    fn: Callable[[torch.Tensor], torch.Tensor]
    reference: torch.Tensor     # the fp32 (out, in) weight the output is checked against
    weight_bytes: int           # what one call reads of the weight
    flops_per_token: float      # multiply-adds × 2 that the format actually computes
    ideal: dict[str, float]     # the best speedup over dense its bound allows: {'bandwidth', 'flops'}
    backend: str
    expected: Callable[[torch.Tensor], torch.Tensor] | None = None   # the output to match, where the
    # format also quantizes its input (w8a8): the fake-quantized activations through `reference`
    peak: str | None = None     # the matmul peak it is held to, where not its activations' (int8)
    # every kernel that computes the same product ({backend: (call, weight bytes it reads)}), the
    # format's own among them: the benchmark times each and routes each shape to the fastest
    routes: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], int]] | None = None


def dense_bytes(W: torch.Tensor, dtype: torch.dtype) -> int:
    """What the dense matmul of W reads in `dtype`: the bandwidth bound's baseline."""
    return W.numel() * torch.finfo(dtype).bits // 8


class NoKernel(ValueError):
    """The record's format has no kernel here (non-uniform codes, activations only, ...)."""


@dataclass(frozen=True)
class KernelFormat:
    """A kernel format with its parameters, as a record or a benchmark case names it by `key`."""

    name: ClassVar[str]                    # the first word of its keys
    order: ClassVar[int] = 100             # records ask the formats lowest first
    swaps: ClassVar[bool] = True           # False: the model's own dense matrices are the format
    needs_cuda: ClassVar[bool] = False     # its kernels run on CUDA only
    activation_dtype: ClassVar[str | None] = None   # a fixed activation dtype (CSR: fp32), else the caller's

    @property
    def key(self) -> str:
        return self.name

    @classmethod
    def parse(cls, key: str) -> "KernelFormat | None":
        """This format for `key`, or None when the key is not one of its."""
        return cls() if key == cls.name else None

    @classmethod
    def for_record(cls, comp: dict[str, Any]) -> "KernelFormat | None":
        """This format for a record's `compression` entry, None when it does not hold it; NoKernel
        when no kernel runs it at all (the search ends with that reason)."""
        return None

    def routed(self, tokens: Sequence[int]) -> "KernelFormat":
        """This format with its layers routed by shape at these token counts (kernels/routing.py),
        where several kernels take its weights; itself where one does."""
        return self

    def on_device(self, device: torch.device, weights: list[torch.Tensor]) -> "KernelFormat":
        """The format its layers take on `device` (2:4 is CSR off CUDA or where a layer is not 2:4)."""
        return self

    def layer(self, layer: nn.Module, path: str, W: torch.Tensor, device: torch.device,
              dtype: torch.dtype) -> tuple[WeightFormat, torch.Tensor | None]:
        """One linear's layout, and the weight its codes stand for where it keeps some weights
        aside (their residual is the difference to `W`); None where it computes `W` itself."""
        raise NotImplementedError(f"format '{self.key}' converts no layers")

    def compress(self, layer: nn.Module) -> None:
        """Give `layer` this format in place, as a method would leave it (for the benchmark)."""
        raise NotImplementedError(f"format '{self.key}' has no end-to-end form")

    def case(self, W: torch.Tensor, dtype: torch.dtype) -> Case:
        """The benchmark case for the fp32 weight W on W's device, activations in `dtype`."""
        raise NotImplementedError(f"format '{self.key}' has no benchmark case")


def numbered(key: str, name: str) -> int | None:
    """N of a key `<name>-<N>` (sparse-90, neurons-50), else None."""
    head, _, n = key.partition("-")
    return int(n) if head == name and n.isdigit() else None


_FORMATS: dict[str, type[KernelFormat]] = {}
_CODE_KERNELS: list[type[WeightFormat]] = []


def code_kernel(cls: type[WeightFormat]) -> type[WeightFormat]:
    """Register a layout built as `cls(codes, device, dtype)` from a quantizer's integer codes
    (a QuantizedTensor): one of the weight-only kernels that kernels/routing.py times for them.
    Its constructor raises ValueError (or ImportError) for codes or a device it does not take."""
    if cls not in _CODE_KERNELS:
        _CODE_KERNELS.append(cls)
    return cls


def code_kernels() -> list[type[WeightFormat]]:
    """Every registered code kernel (this package's modules imported first)."""
    formats()
    return list(_CODE_KERNELS)


def register_format(cls: type[KernelFormat]) -> type[KernelFormat]:
    if cls.name in _FORMATS and _FORMATS[cls.name] is not cls:
        raise ValueError(f"kernel format '{cls.name}' registered twice "
                         f"({_FORMATS[cls.name].__module__}, {cls.__module__})")
    _FORMATS[cls.name] = cls
    return cls


def formats() -> dict[str, type[KernelFormat]]:
    """Every registered format, in the order records ask them (the modules of this package first)."""
    import kernels.formats as package
    for info in pkgutil.iter_modules(package.__path__, prefix="kernels.formats."):
        importlib.import_module(info.name)
    return dict(sorted(_FORMATS.items(), key=lambda kv: (kv[1].order, kv[0])))


def parse(key: str) -> KernelFormat:
    """The format a key names: int8, w8a8, int4-w4-g128, packed-w3-ch, sparse-90, 2:4, dense, ..."""
    for cls in formats().values():
        found = cls.parse(key)
        if found is not None:
            return found
    raise ValueError(f"unknown kernel format '{key}'; known: {', '.join(formats())}")


def format_for(record: dict[str, Any]) -> KernelFormat:
    """The kernel format of a record (or of its `compression` dict); NoKernel says why none fits."""
    comp = record.get("compression", record)
    if comp.get("arithmetic") == "simulated integer":   # I-BERT: its integer GELU/softmax/LayerNorm
        raise NoKernel("the record's integer arithmetic is simulated in floating point (its non-linear kernels "
                       "too): converting its linears would time the simulation, not the method")
    for cls in formats().values():
        found = cls.for_record(comp)
        if found is not None:
            return found
    raise NoKernel(f"compression kind '{comp.get('kind')}' has no kernel format")
