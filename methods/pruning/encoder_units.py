"""Head and neuron pruning of an encoder (BERT family): the `EncoderPruning` base of the FLOPs-rate
pruners (Kwon et al., KCM, Kprune), head and neuron masks, their physical removal, and FLOPs.

A head mask value m_lh multiplies head h's context vectors before the attention output
projection; a neuron mask value m_ln multiplies FFN neuron n's activation before the output
projection. A mask of 0 removes the structure; other values fold into the projection's columns.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from methods.core.base import CompressionResult, Kind, ModelMethod, RateBasis
from methods.core.calibration import InputBatches
from methods.core.hooks import forward_hooks
from methods.core.model_facts import ModelSize
from methods.pruning.structure import remove_units, struct_spec, units
from methods.core.settings import Count, Fraction


def require_encoder(family, method: str) -> None:
    """Encoder head/neuron methods need an encoder with BERT's attention and coupled structures."""
    if family is not None and (family.attention != "bert" or family.structure is None):
        raise ValueError(f"method '{method}' prunes encoder heads and neurons (BERT family), "
                         f"not a '{family.name}' model; for decoders use llm_pruner or block_drop")


def head_dim(model: nn.Module) -> int:
    cfg = model.config
    return getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads


def layer_shapes(model: nn.Module, family) -> list[tuple[int, int]]:
    """(heads, neurons) kept in each layer."""
    spec, hd = struct_spec(family), head_dim(model)
    out = []
    for block in family.blocks(model):
        m = dict(block.named_modules())
        out.append((m[spec.q].out_features // hd, m[spec.mlp_down].in_features))
    return out


@contextmanager
def masks_applied(model: nn.Module, family, head_mask: torch.Tensor, neuron_mask: torch.Tensor):
    """Multiply head contexts and FFN activations by the masks during forwards inside the block.
    The masks may require grad (Fisher) and may carry a leading batch dimension (B, L, H). A head
    unit is one key/value head with its query heads (one head without GQA)."""
    spec, hd = struct_spec(family), head_dim(model)
    pre = []
    for i, block in enumerate(family.blocks(model)):
        m = dict(block.named_modules())
        width = hd * units(block, spec, hd).q_per_unit

        def head_hook(_mod, args, i=i, width=width):
            x = args[0]
            hm = head_mask[..., i, :] if head_mask.dim() == 3 else head_mask[i]
            scale = hm.repeat_interleave(width, dim=-1)
            scale = scale.unsqueeze(-2) if scale.dim() == 2 else scale  # (B, 1, H·dh) over tokens
            return (x * scale.to(x.dtype),)

        def neuron_hook(_mod, args, i=i):
            x = args[0]
            nm = neuron_mask[..., i, :] if neuron_mask.dim() == 3 else neuron_mask[i]
            nm = nm.unsqueeze(-2) if nm.dim() == 2 else nm
            return (x * nm.to(x.dtype),)

        pre += [(m[spec.o], head_hook), (m[spec.mlp_down], neuron_hook)]
    with forward_hooks(pre=pre):
        yield


@torch.no_grad()
def prune_with_masks(model: nn.Module, family, head_mask: torch.Tensor, neuron_mask: torch.Tensor) -> None:
    """Fold the mask values into the projections' columns and physically remove the zeros."""
    spec, hd = struct_spec(family), head_dim(model)
    for i, block in enumerate(family.blocks(model)):
        m = dict(block.named_modules())
        u = units(block, spec, hd)
        m[spec.o].weight.mul_(head_mask[i].repeat_interleave(hd * u.q_per_unit).to(m[spec.o].weight.dtype).unsqueeze(0))
        m[spec.mlp_down].weight.mul_(neuron_mask[i].to(m[spec.mlp_down].weight.dtype).unsqueeze(0))
        remove_units(block, spec, u, (head_mask[i] == 0).nonzero().flatten().tolist(),
                     (neuron_mask[i] == 0).nonzero().flatten().tolist())


def reference_batch_size(model: nn.Module) -> int:
    """The mini-batch of Kwon et al.'s and Kprune's reference code: 12 for SQuAD, 32 for GLUE."""
    return 12 if hasattr(model, "qa_outputs") else 32


def unit_flops(model: nn.Module, seq_len: int) -> tuple[int, int]:
    """FLOPs of one attention head and of one FFN neuron for one sequence (2 per multiply-add):
    a head's rows of q/k/v and columns of o, its attention scores and context (2·S²·dh each); a
    neuron's row of the FFN input and column of its output projection."""
    d, hd, S = model.config.hidden_size, head_dim(model), seq_len
    return 2 * S * d * hd * 4 + 2 * 2 * S * S * hd, 2 * S * d * 2


def encoder_flops(model: nn.Module, family, seq_len: int) -> int:
    """FLOPs of the encoder blocks for one sequence: heads and neurons kept. Biases, softmax and
    norms are not counted; embeddings and task heads neither. The width is each block's own (a
    model whose hidden dimensions were pruned is counted at its width)."""
    spec, hd, S = struct_spec(family), head_dim(model), seq_len
    total = 0
    for block in family.blocks(model):
        m = dict(block.named_modules())
        d, heads, neurons = m[spec.q].in_features, m[spec.q].out_features // hd, m[spec.mlp_down].in_features
        total += heads * (2 * S * d * hd * 4 + 2 * 2 * S * S * hd) + neurons * 2 * S * d * 2
    return total


class EncoderPruning(ModelMethod):
    """Common ground of the calibration-only head/neuron pruners (Kwon et al., KCM, Kprune): a
    FLOPs rate, BERT-family models, labelled task batches, and a FLOPs-based result."""

    accepts = (InputBatches,)
    physical = True
    granularity = "N,H"

    def __init__(self, flops_rate: Fraction, seq_len: Count):
        if not 0 < flops_rate < 1:
            raise ValueError(f"flops_rate (fraction of FLOPs removed) must lie in (0, 1), got {flops_rate}")
        self.flops_rate, self.seq_len = flops_rate, seq_len
        self.facts: dict[str, Any] = {}

    @property
    def needs_calibration(self) -> bool:
        return True

    def check_model(self, linears, family=None) -> None:
        require_encoder(family, self.name)

    def result(self, before: ModelSize, after: ModelSize) -> CompressionResult:
        f = self.facts
        return CompressionResult(Kind.STRUCTURED, self.granularity, before, after, RateBasis.FLOPS,
                                 flops_before=f["flops_before"], flops_after=f["flops_after"], facts=self.summary())

    def summary(self) -> dict[str, Any]:
        return {"flops_rate_target": self.flops_rate,
                **{k: v for k, v in self.facts.items() if k not in ("flops_before", "flops_after")}}
