"""Block linears wrapped for training (weight masks, fake quantization): the wrapper that keeps
the plain linear inside, and the swap of every block linear for a wrapper and back."""
from __future__ import annotations

from typing import Callable, Mapping

import torch
from torch import nn

from methods.core.arch import replace_module


class LinearWrapper(nn.Module):
    """A module that computes with `self.linear`'s parameters in some altered way and gives back a
    plain linear at the end (`unwrap`)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.linear = linear

    @property
    def weight(self) -> torch.Tensor:
        return self.linear.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.linear.bias

    def unwrap(self) -> nn.Linear:
        """The plain linear that replaces the wrapper for good."""
        raise NotImplementedError


class ComputedLinear(nn.Module):
    """A linear whose weight is computed from what it trains (codes and scales, frozen codes and a
    few free columns): y = x weight()ᵀ + bias, and `to_linear` hands back the plain layer."""

    bias: torch.Tensor | None

    def weight(self) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.weight(), self.bias)

    @torch.no_grad()
    def to_linear(self) -> nn.Linear:
        w = self.weight()
        out = nn.Linear(w.shape[1], w.shape[0], bias=self.bias is not None, device=w.device, dtype=w.dtype)
        out.weight.copy_(w)
        if self.bias is not None:
            out.bias.copy_(self.bias)
        return out


def wrap_block_linears(model: nn.Module, family, make: Callable[[str, nn.Linear], LinearWrapper],
                       what: str) -> dict[str, LinearWrapper]:
    """Replace every block linear by `make('<block>.<name>', linear)`; keys '<block>.<name>'."""
    out = {}
    for i, block in enumerate(family.blocks(model)):
        for name, layer in family.linears(block).items():
            if not isinstance(layer, nn.Linear):
                raise ValueError(f"{what} wraps nn.Linear layers; {name} is a {type(layer).__name__}")
            key = f"{i}.{name}"
            out[key] = make(key, layer)
            replace_module(block, name, out[key])
    return out


def unwrap_block_linears(model: nn.Module, family, wrapped: Mapping[str, LinearWrapper]) -> None:
    """Put each wrapper's final plain linear back in its place."""
    blocks = family.blocks(model)
    for key, m in wrapped.items():
        i, name = key.split(".", 1)
        replace_module(blocks[int(i)], name, m.unwrap())
