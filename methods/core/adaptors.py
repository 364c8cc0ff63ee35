"""LoRA adaptors through `peft`, as every method that attaches them sees them: which linears get
adaptors (peft's target module names) and how many parameters the adaptors hold.

It lives in core because both the adaptor methods (methods/adaptors) and adaptor quantization
(methods/quantization: QLoRA, INT2.1) use it, and neither method family may import the other."""
from __future__ import annotations

from typing import Sequence

from torch import nn

from methods.core.arch import Family


def lora_params(model: nn.Module) -> int:
    """Parameters of the LoRA factors (A and B) in a peft model."""
    return sum(p.numel() for n, p in model.named_parameters() if ".lora_A." in n or ".lora_B." in n)


def block_linear_leaves(family: Family, model: nn.Module) -> list[str]:
    """The leaf names of every block linear of the model, sorted (peft matches target names by leaf)."""
    return sorted({name.rsplit(".", 1)[-1] for block in family.blocks(model) for name in family.linears(block)})


def lora_targets(family: Family, model: nn.Module, targets: Sequence[str] | None = None,
                 every_linear: bool = False) -> list[str]:
    """peft's target module names for the model: `targets` when given (non-empty), else every block
    linear (`every_linear`: QLoRA's and INT2.1's papers) or the family's `adaptor_targets` (LoRA's
    and AdaLoRA's papers: query and value)."""
    if targets:
        return list(targets)
    if every_linear:
        return block_linear_leaves(family, model)
    return list(family.adaptor_targets)
