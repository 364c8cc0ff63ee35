"""Head and neuron masks of an encoder (BERT family), their physical removal, and FLOPs.

A head mask value m_lh multiplies head h's context vectors before the attention output
projection; a neuron mask value m_ln multiplies FFN neuron n's activation before the output
projection. A mask of 0 removes the structure; other values fold into the projection's columns.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from methods.base import Method
from methods.structure import remove_units, struct_spec, units


def require_encoder(family, method: str) -> None:
    """Encoder head/neuron methods need the BERT family's coupled structures."""
    if family is not None and family.name != "bert":
        raise ValueError(f"method '{method}' prunes encoder heads and neurons (BERT family), "
                         f"not a '{family.name}' model; for decoders use llm_pruner or block_drop")


def head_dim(model: nn.Module) -> int:
    return model.config.hidden_size // model.config.num_attention_heads


def layer_shapes(model: nn.Module, family) -> list[tuple[int, int]]:
    """(heads, neurons) kept in each layer."""
    spec, hd = struct_spec(family), head_dim(model)
    out = []
    for block in family.blocks(model):
        m = dict(block.named_modules())
        out.append((m[spec.q].out_features // hd, m[spec.mlp_in].in_features))
    return out


@contextmanager
def masks_applied(model: nn.Module, family, head_mask: torch.Tensor, neuron_mask: torch.Tensor):
    """Multiply head contexts and FFN activations by the masks during forwards inside the block.
    The masks may require grad (Fisher) and may carry a leading batch dimension (B, L, H)."""
    spec, hd = struct_spec(family), head_dim(model)
    handles = []
    for i, block in enumerate(family.blocks(model)):
        m = dict(block.named_modules())

        def head_hook(_mod, args, i=i):
            x = args[0]
            hm = head_mask[..., i, :] if head_mask.dim() == 3 else head_mask[i]
            scale = hm.repeat_interleave(hd, dim=-1)
            scale = scale.unsqueeze(-2) if scale.dim() == 2 else scale  # (B, 1, H·dh) over tokens
            return (x * scale.to(x.dtype),)

        def neuron_hook(_mod, args, i=i):
            x = args[0]
            nm = neuron_mask[..., i, :] if neuron_mask.dim() == 3 else neuron_mask[i]
            nm = nm.unsqueeze(-2) if nm.dim() == 2 else nm
            return (x * nm.to(x.dtype),)

        handles.append(m[spec.o].register_forward_pre_hook(head_hook))
        handles.append(m[spec.mlp_in].register_forward_pre_hook(neuron_hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def prune_with_masks(model: nn.Module, family, head_mask: torch.Tensor, neuron_mask: torch.Tensor) -> None:
    """Fold the mask values into the projections' columns and physically remove the zeros."""
    spec, hd = struct_spec(family), head_dim(model)
    for i, block in enumerate(family.blocks(model)):
        m = dict(block.named_modules())
        m[spec.o].weight.mul_(head_mask[i].repeat_interleave(hd).to(m[spec.o].weight.dtype).unsqueeze(0))
        m[spec.mlp_in].weight.mul_(neuron_mask[i].to(m[spec.mlp_in].weight.dtype).unsqueeze(0))
        u = units(block, spec, hd)
        remove_units(block, spec, u, (head_mask[i] == 0).nonzero().flatten().tolist(),
                     (neuron_mask[i] == 0).nonzero().flatten().tolist())


def encoder_flops(model: nn.Module, family, seq_len: int) -> int:
    """FLOPs of the encoder blocks for one sequence (2 per multiply-add): the q/k/v/o projections,
    attention scores and context (2·S²·H·dh each), the two FFN projections. Biases, softmax and
    norms are not counted; embeddings and task heads neither."""
    d = model.config.hidden_size
    hd = head_dim(model)
    total = 0
    for heads, neurons in layer_shapes(model, family):
        total += 2 * seq_len * d * heads * hd * 4          # q, k, v, o
        total += 2 * 2 * seq_len * seq_len * heads * hd    # QKᵀ and (softmax)V
        total += 2 * seq_len * d * neurons * 2             # FFN in and out
    return total


class EncoderPruning(Method):
    """Common ground of the calibration-only head/neuron pruners (Kwon et al., KCM, Kprune): a
    FLOPs rate, BERT-family models, and the FLOPs facts of the result."""

    whole_model = True

    def __init__(self, flops_rate: float, seq_len: int, **knobs: Any):
        super().__init__(flops_rate=flops_rate, seq_len=seq_len, **knobs)
        if not 0 < flops_rate < 1:
            raise ValueError(f"flops_rate (fraction of FLOPs removed) must lie in (0, 1), got {flops_rate}")
        self.flops_rate, self.seq_len = flops_rate, seq_len
        self.facts: dict[str, Any] = {}

    @property
    def needs_calibration(self) -> bool:
        return True

    def check_model(self, linears, family=None) -> None:
        require_encoder(family, self.name)

    def summary(self) -> dict[str, Any]:
        f = self.facts
        rate = 1 - f["flops_after"] / f["flops_before"] if f else None
        return {"structured": True, "flops_rate_target": self.flops_rate, "flops_comp_rate": rate, **f}
