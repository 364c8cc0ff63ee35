"""Model families the sequential engine knows: where the blocks are, which linears they hold,
and in which order GPTQ's `true_sequential` mode compresses them."""
from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]
    blocks_attr: str
    # Linear names inside one block, grouped in GPTQ's true-sequential order.
    sequential: tuple[tuple[str, ...], ...]

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        return operator.attrgetter(self.blocks_attr)(model)

    def linears(self, block: nn.Module) -> dict[str, nn.Module]:
        """The block's compressible linears, in true-sequential order."""
        mods = dict(block.named_modules())
        return {name: mods[name] for group in self.sequential for name in group}


_LLAMA_LIKE = (("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), ("self_attn.o_proj",),
               ("mlp.gate_proj", "mlp.up_proj"), ("mlp.down_proj",))

FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("llama", ("llama", "mistral", "qwen2"), "model.layers", _LLAMA_LIKE),
    Family("opt", ("opt",), "model.decoder.layers",
           (("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), ("self_attn.out_proj",),
            ("fc1",), ("fc2",))),
    Family("gpt2", ("gpt2",), "transformer.h",
           (("attn.c_attn",), ("attn.c_proj",), ("mlp.c_fc",), ("mlp.c_proj",))),
    Family("gpt_neox", ("gpt_neox",), "gpt_neox.layers",
           (("attention.query_key_value",), ("attention.dense",), ("mlp.dense_h_to_4h",),
            ("mlp.dense_4h_to_h",))),
)}


class UnsupportedModel(ValueError):
    pass


def family_of(model_type: str) -> Family:
    for fam in FAMILIES.values():
        if model_type in fam.model_types:
            return fam
    known = sorted(t for f in FAMILIES.values() for t in f.model_types)
    raise UnsupportedModel(
        f"model_type '{model_type}' is not a family the engine knows ({', '.join(known)}); "
        f"add a Family entry in methods/arch.py naming its blocks and linears")


def weight_matrix(module: nn.Module) -> torch.Tensor:
    """The layer's weight as an (out_features, in_features) view; GPT-2's Conv1D stores it transposed."""
    w = module.weight.data
    return w.t() if isinstance(module, Conv1D) else w


def in_features(module: nn.Module) -> int:
    return weight_matrix(module).shape[1]
