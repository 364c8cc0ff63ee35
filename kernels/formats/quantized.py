"""What the integer-code formats share: the codes a quantizer kept on each linear
(`methods.quantization.quantizer.keep_codes`), the fp16 weights it kept aside as a residual, and
round-to-nearest codes for the benchmark's cases and end-to-end models."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, ClassVar, Sequence

import torch
from torch import nn

from kernels.formats.base import Case, KernelFormat, WeightFormat, dense_bytes
from methods.core.arch import weight_matrix
from methods.quantization.quantizer import QuantizedTensor, QuantSpec, keep_codes, kept_codes, quantize_weight

UNIFORM_GRANULARITIES = ("tensor", "channel", "group")


def uniform_codes(comp: dict[str, Any]) -> tuple[int, int | None] | None:
    """(bits, group) of a quantized record whose codes are uniform 2..8-bit integers per tensor,
    channel or group (group None: one per row); None otherwise."""
    bits, gran = comp.get("wbits"), comp.get("quant_granularity")
    if comp.get("kind") != "quantized" or gran not in UNIFORM_GRANULARITIES or bits is None:
        return None
    if float(bits) != int(bits) or not 2 <= bits <= 8:
        return None
    return int(bits), (comp.get("group_size") if gran == "group" else None)


def weight_only(comp: dict[str, Any]) -> bool:
    return not (comp.get("abits") and comp["abits"] < 16)


@dataclass(frozen=True)
class QuantizedFormat(KernelFormat):
    """Integer codes, `bits` wide, one scale and zero point per row or per `group` inputs."""

    bits: int = 8
    group: int | None = None
    # the token counts its layers are routed at (kernels/routing.py); () runs its own kernel alone
    route_tokens: tuple[int, ...] = field(default=(), compare=False)
    sym: ClassVar[bool] = False            # the round-to-nearest codes it makes itself (no zero point)
    one_width: ClassVar[int | None] = None  # a format of one width and grid (int8, w8a8): its key is its name
    quantizes_activations: ClassVar[bool] = False   # w8a8: no weight-only kernel computes its product

    @property
    def key(self) -> str:
        if self.one_width:
            return self.name
        return f"{self.name}-w{self.bits}-" + (f"g{self.group}" if self.group else "ch")

    @classmethod
    def parse(cls, key: str) -> "QuantizedFormat | None":
        """`<name>-w<bits>-g<group>` or `<name>-w<bits>-ch`; a one-width format, its name."""
        if cls.one_width:
            return cls(cls.one_width) if key == cls.name else None
        head, *rest = key.split("-")
        if head != cls.name or len(rest) != 2 or not rest[0].startswith("w") or not rest[0][1:].isdigit():
            return None
        if rest[1] != "ch" and not (rest[1].startswith("g") and rest[1][1:].isdigit()):
            return None
        return cls(int(rest[0][1:]), None if rest[1] == "ch" else int(rest[1][1:]))

    def quant_spec(self) -> QuantSpec:
        return QuantSpec(bits=self.bits, sym=self.sym, granularity="group" if self.group else "channel",
                         group_size=self.group or 128)

    def layout(self, qt: QuantizedTensor, device: torch.device, dtype: torch.dtype) -> WeightFormat:
        """The layout of codes this format was made for (a benchmark case's)."""
        raise NotImplementedError

    def codes_format(self, qt: QuantizedTensor, layer: nn.Module, path: str, device: torch.device,
                     dtype: torch.dtype) -> WeightFormat:
        """The layout of a converted linear's codes (a format may fall back to `packed` for codes
        its kernel does not take)."""
        return self.layout(qt, device, dtype)

    def routed(self, tokens: Sequence[int]) -> "QuantizedFormat":
        return replace(self, route_tokens=tuple(tokens))

    def other_kernels(self, qt: QuantizedTensor, layer: nn.Module | None, fmt: WeightFormat, device: torch.device,
                      dtype: torch.dtype) -> list[WeightFormat]:
        """The other kernels that compute `fmt`'s product from the same codes: routing's
        candidates (kernels/routing.py) besides the format's own."""
        from kernels.routing import weight_only_layouts
        return weight_only_layouts(qt, device, dtype, skip=[fmt.backend])

    def _kernels(self, qt: QuantizedTensor, layer: nn.Module | None, fmt: WeightFormat, device: torch.device,
                 dtype: torch.dtype) -> list[WeightFormat]:
        """`fmt` and the other kernels of its product that run here (none emulated)."""
        return [k for k in [fmt, *self.other_kernels(qt, layer, fmt, device, dtype)] if not k.emulated]

    def layer(self, layer, path, W, device, dtype):
        qt = kept_codes(layer)
        if qt is None:
            raise ValueError(f"{path} holds no integer codes: a quantizer keeps them on each linear in the process "
                             "that compressed the model; convert right after compressing (engine.keep_codes=true)")
        if qt.bits != self.bits:
            raise ValueError(f"{path} holds {qt.bits}-bit codes, the record says {self.bits}")
        fmt = self.codes_format(qt, layer, path, device, dtype)
        kernels = self._kernels(qt, layer, fmt, device, dtype) if self.route_tokens else []
        if kernels:      # else unrouted: its own kernel, or no kernel here (the format says so)
            from kernels.routing import Routed
            fmt = Routed(kernels, dtype, self.route_tokens, dequant=not self.quantizes_activations)
        return fmt, qt.to(device).dequantize()

    def compress(self, layer: nn.Module) -> None:
        W = weight_matrix(layer)
        qt = quantize_weight(W, self.quant_spec())
        W.copy_(qt.dequantize().to(W.dtype))
        keep_codes(layer, qt, W.device)    # the benchmark's model converts where it runs: no round trip

    def case(self, W: torch.Tensor, dtype: torch.dtype) -> Case:
        qt = quantize_weight(W, self.quant_spec())
        fmt = self.layout(qt, W.device, dtype)
        return Case(fmt.matmul, qt.dequantize(), fmt.weight_bytes, 2 * W.numel(),
                    {"bandwidth": dense_bytes(W, dtype) / fmt.weight_bytes, "flops": 1.0}, fmt.backend,
                    routes=self.case_routes(self._kernels(qt, None, fmt, W.device, dtype)))

    def case_routes(self, kernels: list[WeightFormat]
                    ) -> dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], int]] | None:
        """A benchmark case's routes: every kernel of the product with the bytes it reads."""
        from kernels.routing import routes_of
        if not kernels:
            return None
        return {name: (fn, k.weight_bytes)
                for name, (k, fn) in routes_of(kernels, dequant=not self.quantizes_activations).items()}
