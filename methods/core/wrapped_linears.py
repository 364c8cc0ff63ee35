"""Block linears wrapped for training (weight masks, fake quantization, trained codes, gated
factors): the wrappers, and the one swap of the block linears for wrappers (or any replacement,
e.g. their factorised form) and of the wrappers back for their final plain modules."""
from __future__ import annotations

from typing import Callable, Mapping, TypeVar

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

    def unwrap(self) -> nn.Linear:
        """The plain linear that replaces this layer for good (the wrappers' common name)."""
        return self.to_linear()


M = TypeVar("M", bound=nn.Module)


def _unwrap(m: nn.Module) -> nn.Module:
    return m.unwrap()


def _checked(layer: nn.Module, name: str, what: str) -> nn.Linear:
    if not isinstance(layer, nn.Linear):
        raise ValueError(f"{what} works on nn.Linear layers; {name} is a {type(layer).__name__}")
    return layer


def block_linears(model: nn.Module, family, what: str) -> dict[str, nn.Linear]:
    """Every block linear, keyed '<block>.<name>' (raises if one is not an nn.Linear)."""
    return {f"{i}.{name}": _checked(layer, name, what)
            for i, block in enumerate(family.blocks(model)) for name, layer in family.linears(block).items()}


def wrap_block(block: nn.Module, family, make: Callable[[str, nn.Linear], M], what: str,
               prefix: str = "") -> dict[str, M]:
    """Replace each linear of one block by `make(prefix + name, linear)`; keys prefix + name."""
    out = {}
    for name, layer in family.linears(block).items():
        key = prefix + name
        out[key] = make(key, _checked(layer, name, what))
        replace_module(block, name, out[key])
    return out


def wrap_block_linears(model: nn.Module, family, make: Callable[[str, nn.Linear], M], what: str) -> dict[str, M]:
    """Replace every block linear by `make('<block>.<name>', linear)`; keys '<block>.<name>'."""
    out = {}
    for i, block in enumerate(family.blocks(model)):
        out.update(wrap_block(block, family, make, what, f"{i}."))
    return out


def unwrap_block(block: nn.Module, wrapped: Mapping[str, M],
                 restore: Callable[[M], nn.Module] = _unwrap) -> None:
    """Put `restore(wrapper)` (default: its `unwrap()`) back in place of each of one block's
    wrappers; `wrapped` is keyed by the linears' names in the block (as `wrap_block` gave them
    without a prefix)."""
    for name, m in wrapped.items():
        replace_module(block, name, restore(m))


def place_block_linears(model: nn.Module, family, modules: Mapping[str, nn.Module]) -> None:
    """Put each module in the block linear's place its key '<block>.<name>' names."""
    blocks = family.blocks(model)
    for key, m in modules.items():
        i, name = key.split(".", 1)
        replace_module(blocks[int(i)], name, m)


def unwrap_block_linears(model: nn.Module, family, wrapped: Mapping[str, M],
                         restore: Callable[[M], nn.Module] = _unwrap) -> None:
    """Put `restore(wrapper)` (default: its `unwrap()`, the final plain linear) back in place of each
    wrapper; keys '<block>.<name>'."""
    place_block_linears(model, family, {key: restore(m) for key, m in wrapped.items()})
