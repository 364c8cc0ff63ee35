"""The one swap of block linears for wrappers and back (methods/core/wrapped_linears.py): keys,
order, the way back (`restore`), the per-block form and the check that every target is a linear."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from methods.core.arch import FAMILIES
from methods.core.wrapped_linears import (ComputedLinear, LinearWrapper, block_linears, place_block_linears,
                                          unwrap_block, unwrap_block_linears, wrap_block, wrap_block_linears)
from tiny_encoders import tiny_bert

FAM = FAMILIES["bert"]


class Halved(LinearWrapper):
    """y = x (W/2)ᵀ + b; unwraps to a fresh linear holding W/2."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight / 2, self.bias)

    @torch.no_grad()
    def unwrap(self) -> nn.Linear:
        out = nn.Linear(self.linear.in_features, self.linear.out_features)
        out.weight.copy_(self.weight / 2)
        out.bias.copy_(self.bias)
        return out


class Doubled(ComputedLinear):
    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.w = linear.weight.detach().clone()
        self.register_buffer("bias", linear.bias.detach().clone())

    def weight(self) -> torch.Tensor:
        return 2 * self.w


def _linears(model: nn.Module) -> dict[str, nn.Module]:
    return {f"{i}.{n}": m for i, b in enumerate(FAM.blocks(model)) for n, m in FAM.linears(b).items()}


def test_wrap_keys_every_block_linear_in_order_and_unwrap_puts_back_unwrap():
    model = tiny_bert(layers=2)
    dense = _linears(model)
    assert block_linears(model, FAM, "test") == dense
    seen = []
    wrapped = wrap_block_linears(model, FAM, lambda key, lin: seen.append(key) or Halved(lin), "test")
    assert list(wrapped) == seen == list(dense)
    assert all(_linears(model)[k] is m and m.linear is dense[k] for k, m in wrapped.items())
    unwrap_block_linears(model, FAM, wrapped)
    after = _linears(model)
    assert all(type(m) is nn.Linear and m is not dense[k] for k, m in after.items())
    assert all(torch.equal(after[k].weight, dense[k].weight / 2) for k in dense)


def test_restore_says_how_a_wrapper_becomes_plain_and_computed_linears_unwrap_to_linears():
    model = tiny_bert(layers=2)
    dense = _linears(model)
    wrapped = wrap_block_linears(model, FAM, lambda key, lin: Halved(lin), "test")
    unwrap_block_linears(model, FAM, wrapped, restore=lambda m: m.linear)
    assert _linears(model) == dense
    wrapped = wrap_block_linears(model, FAM, lambda key, lin: Doubled(lin), "test")
    unwrap_block_linears(model, FAM, wrapped)
    assert all(torch.equal(m.weight, 2 * dense[k].weight) for k, m in _linears(model).items())


def test_place_puts_any_module_at_its_key():
    model = tiny_bert(layers=2)
    new = {k: nn.Identity() for k in list(_linears(model))[::3]}
    place_block_linears(model, FAM, new)
    assert all(_linears(model)[k] is m for k, m in new.items())


def test_one_block_keys_its_linears_by_name():
    model = tiny_bert(layers=2)
    block = FAM.blocks(model)[1]
    dense = FAM.linears(block)
    wrapped = wrap_block(block, FAM, lambda key, lin: Halved(lin), "test")
    assert list(wrapped) == list(dense) and all(m.linear is dense[n] for n, m in wrapped.items())
    assert all(type(m) is nn.Linear for m in FAM.linears(FAM.blocks(model)[0]).values())
    unwrap_block(block, wrapped, restore=lambda m: m.linear)
    assert FAM.linears(block) == dense


def test_a_target_that_is_not_a_linear_is_refused():
    model = tiny_bert(layers=2)
    place_block_linears(model, FAM, {"1.output.dense": nn.Identity()})
    with pytest.raises(ValueError, match="test works on nn.Linear layers; output.dense is a Identity"):
        block_linears(model, FAM, "test")
    with pytest.raises(ValueError, match="output.dense is a Identity"):
        wrap_block_linears(model, FAM, lambda key, lin: Halved(lin), "test")
