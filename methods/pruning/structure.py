"""Coupled structures of a decoder block and their physical removal.

A *head unit* is one key/value head with the query heads that read it (one head without GQA):
its rows of q, k and v and its columns of o. A *channel unit* is one MLP hidden channel: its
row of every up-projection (gate and up, or fc1) and its column of the down-projection.
Removing a unit slices every coupled matrix at once, so the block keeps working, smaller.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from methods.core.arch import FAMILIES, Family, Structure, UnsupportedModel, replace_module


class FusedQKV(nn.Module):
    """GPT-2's fused c_attn as three linears: forward returns [q(x), k(x), v(x)] concatenated,
    as c_attn did, so that the attention splits it at its `split_size`."""

    def __init__(self, conv: nn.Module, width: int):
        super().__init__()
        w, b = conv.weight.data.t(), conv.bias.data        # Conv1D stores (in, out)
        for i, name in enumerate(("q", "k", "v")):
            lin = nn.Linear(w.shape[1], width, device=w.device, dtype=w.dtype)
            lin.weight.data.copy_(w[i * width:(i + 1) * width])
            lin.bias.data.copy_(b[i * width:(i + 1) * width])
            setattr(self, name, lin)

    @property
    def weight(self) -> torch.Tensor:
        return torch.cat([self.q.weight, self.k.weight, self.v.weight])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.q(x), self.k(x), self.v(x)], dim=-1)


def _linear_of(conv: nn.Module) -> nn.Linear:
    w = conv.weight.data.t()
    lin = nn.Linear(w.shape[1], w.shape[0], device=w.device, dtype=w.dtype)
    lin.weight.data.copy_(w)
    lin.bias.data.copy_(conv.bias.data)
    return lin


@torch.no_grad()
def unfuse_gpt2(model: nn.Module, family: Family) -> None:
    """Give GPT-2 blocks the separate q, k, v and output linears that structured pruning slices
    (the same function; idempotent). Other families are left as they are."""
    if not family.fused_qkv:
        return
    from transformers.pytorch_utils import Conv1D
    for block in family.blocks(model):
        attn = block.attn
        if isinstance(getattr(attn, "c_attn", None), Conv1D):
            attn.c_attn = FusedQKV(attn.c_attn, attn.split_size)
        for name in ("attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            mod = block.get_submodule(name)
            if isinstance(mod, Conv1D):
                replace_module(block, name, _linear_of(mod))


def struct_spec(family: Family) -> Structure:
    if family.structure is None:
        known = sorted(f.name for f in FAMILIES.values() if f.structure is not None)
        raise UnsupportedModel(f"structured pruning knows the coupled structures of {known} blocks, "
                               f"not '{family.name}'; give its Family a Structure in methods/core/arch.py")
    return family.structure


@dataclass
class Units:
    """Index ranges of every unit inside a block's matrices."""

    head_dim: int
    q_per_unit: int     # q heads per kv head
    n_heads: int        # kv-head units
    n_channels: int

    def q_rows(self, u: int) -> range:
        w = self.q_per_unit * self.head_dim
        return range(u * w, (u + 1) * w)

    def kv_rows(self, u: int) -> range:
        return range(u * self.head_dim, (u + 1) * self.head_dim)


class EmptyAttention(nn.Module):
    """The attention of a block whose heads were all removed: it contributes nothing but the
    output projection's bias. It keeps the removed module's (now empty) linears under their
    names, so code that reads the block's structure still finds them. (Attention kernels refuse
    zero heads on a GPU.)"""

    def __init__(self, attn: nn.Module, o_inside: str | None):
        super().__init__()
        for name, child in attn.named_children():
            setattr(self, name, child)
        self.o_inside = o_inside

    def forward(self, hidden_states: torch.Tensor | None = None, *args, **kwargs):
        x = hidden_states if hidden_states is not None else args[0]
        empty = x.new_zeros(*x.shape[:-1], 0)
        return (getattr(self, self.o_inside)(empty) if self.o_inside else empty), None


def units(block: nn.Module, spec: Structure, head_dim: int) -> Units:
    mods = dict(block.named_modules())
    q_out, kv_out = mods[spec.q].out_features, mods[spec.k].out_features
    n_kv = kv_out // head_dim
    # a block whose heads were all removed keeps q_per_unit 1 (it has no head units left)
    return Units(head_dim, q_out // kv_out if kv_out else 1, n_kv, mods[spec.mlp_down].in_features)


def _sliced(layer: nn.Linear, rows: torch.Tensor | None, cols: torch.Tensor | None) -> nn.Linear:
    w = layer.weight.data
    if rows is not None:
        w = w[rows]
    if cols is not None:
        w = w[:, cols]
    new = nn.Linear(w.shape[1], w.shape[0], bias=layer.bias is not None, device=w.device, dtype=w.dtype)
    new.weight.data.copy_(w)
    if layer.bias is not None:
        new.bias.data.copy_(layer.bias.data[rows] if rows is not None else layer.bias.data)
    return new


@torch.no_grad()
def remove_units(block: nn.Module, spec: Structure, u: Units, drop_heads: list[int], drop_channels: list[int]) -> None:
    """Physically remove the given head and channel units from one block."""
    mods = dict(block.named_modules())
    dev = mods[spec.q].weight.device
    if drop_heads:
        keep = [h for h in range(u.n_heads) if h not in set(drop_heads)]
        q_keep = torch.tensor([r for h in keep for r in u.q_rows(h)], device=dev, dtype=torch.long)
        kv_keep = torch.tensor([r for h in keep for r in u.kv_rows(h)], device=dev, dtype=torch.long)
        replace_module(block, spec.q, _sliced(mods[spec.q], q_keep, None))
        replace_module(block, spec.k, _sliced(mods[spec.k], kv_keep, None))
        replace_module(block, spec.v, _sliced(mods[spec.v], kv_keep, None))
        replace_module(block, spec.o, _sliced(mods[spec.o], None, q_keep))
        attn = block.get_submodule(spec.attn)
        for attr in spec.head_attrs:
            setattr(attn, attr, len(keep) * u.q_per_unit)
        if hasattr(attn, "all_head_size"):
            attn.all_head_size = len(keep) * u.q_per_unit * u.head_dim
        if hasattr(attn, "split_size"):  # GPT-2 splits its fused q, k, v at this width
            attn.split_size = len(keep) * u.q_per_unit * u.head_dim
        if not keep and not isinstance(attn, EmptyAttention):
            o_inside = spec.o[len(spec.attn) + 1:] if spec.o.startswith(spec.attn + ".") else None
            replace_module(block, spec.attn, EmptyAttention(attn, o_inside))
    if drop_channels:
        keep = torch.tensor([c for c in range(u.n_channels) if c not in set(drop_channels)], device=dev,
                            dtype=torch.long)
        for name in spec.mlp_up:
            replace_module(block, name, _sliced(mods[name], keep, None))
        replace_module(block, spec.mlp_down, _sliced(mods[spec.mlp_down], None, keep))


def unit_scores(block: nn.Module, spec: Structure, u: Units, elementwise: callable) -> tuple[torch.Tensor, torch.Tensor]:
    """Importance of each head unit and channel unit: the sum of `elementwise(module)` (a tensor
    shaped like its weight, e.g. |w · ∂L/∂w| or w²) over the unit's coupled entries."""
    mods = dict(block.named_modules())
    s = {name: elementwise(mods[name]).float() for name in (spec.q, spec.k, spec.v, spec.o, *spec.mlp_up, spec.mlp_down)}
    heads = torch.stack([
        s[spec.q][list(u.q_rows(h))].sum() + s[spec.k][list(u.kv_rows(h))].sum() + s[spec.v][list(u.kv_rows(h))].sum()
        + s[spec.o][:, list(u.q_rows(h))].sum() for h in range(u.n_heads)])
    channels = sum(s[n].sum(1) for n in spec.mlp_up) + s[spec.mlp_down].sum(0)
    return heads, channels


def unit_params(block: nn.Module, spec: Structure, u: Units) -> tuple[int, int]:
    """Parameters removed with one head unit and with one channel unit (biases included)."""
    mods = dict(block.named_modules())
    hidden = mods[spec.q].in_features
    bias = lambda n: mods[n].bias is not None  # noqa: E731
    head = (u.q_per_unit + 2) * u.head_dim * hidden + u.q_per_unit * u.head_dim * hidden
    head += u.head_dim * (u.q_per_unit * bias(spec.q) + bias(spec.k) + bias(spec.v))
    chan = len(spec.mlp_up) * hidden + hidden + sum(bias(n) for n in spec.mlp_up)
    return head, chan


def plan_removal(n_layers: int, u: Units, head_params: int, chan_params: int, target: int,
                 head_fraction: float | None = None) -> tuple[int, list[int]]:
    """Heads to remove per layer (the same in every pruned layer) and channels per layer, so that
    the removed parameters land within one channel unit of `target`."""
    layer_params = u.n_heads * head_params + u.n_channels * chan_params
    f = target / (n_layers * layer_params) if head_fraction is None else head_fraction
    if f >= 1:
        raise ValueError("the pruning target removes every structure of the pruned layers; lower the ratio")
    heads = min(u.n_heads - 1, round(f * u.n_heads))
    rest = target - n_layers * heads * head_params
    total_channels = max(0, round(rest / chan_params))
    per, extra = divmod(total_channels, n_layers)
    channels = [per + (1 if i < extra else 0) for i in range(n_layers)]
    if max(channels) >= u.n_channels:
        raise ValueError("the pruning target needs more MLP channels than a layer has; lower the ratio")
    return heads, channels

