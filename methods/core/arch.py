"""Model families: where the blocks are, which linears they hold (in the order GPTQ's
`true_sequential` mode compresses them), and everything a method needs to know of a family:
its role, its coupled structures (heads and MLP channels), its attention, its adaptor targets.
One entry of FAMILIES per family; no method compares family names."""
from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D


@dataclass(frozen=True)
class Structure:
    """The coupled units of one block that structured pruning removes together: an attention head
    (its rows of q, k and v and its columns of o) and an MLP channel (its row of every
    up-projection, its column of the down-projection)."""

    attn: str
    q: str
    k: str
    v: str
    o: str
    mlp_up: tuple[str, ...]   # the MLP's up-projections (gate and up, or fc1): one row per channel
    mlp_down: str             # the MLP's down-projection: one column per channel
    head_attrs: tuple[str, ...] = ()  # attention attributes holding the head count (OPT: num_heads)


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]
    blocks_attr: str
    # Linear names inside one block, grouped in GPTQ's true-sequential order.
    sequential: tuple[tuple[str, ...], ...]
    # (previous op, linears reading its output): a per-channel scale can move from the linears'
    # inputs into the previous op exactly (a norm's affine weight, or a linear's output rows,
    # through an elementwise product or a positively homogeneous activation). The first entries
    # are the norms SmoothQuant uses; AWQ uses all that fit.
    scale_pairs: tuple[tuple[str, tuple[str, ...]], ...] = ()
    role: str = "decoder"    # decoder (a causal LM: perplexity tasks) or encoder (MNLI / QQP / SQuAD)
    # "bert": softmax(qkᵀ/√d) over absolute positions, post-LN blocks (BERT, RoBERTa); "deberta":
    # disentangled relative terms; "causal": a decoder's
    attention: str = "causal"
    structure: Structure | None = None   # None: its blocks have no structured pruning
    fused_qkv: bool = False              # q, k, v in one Conv1D (GPT-2): structure.unfuse_gpt2 splits it first
    # the embeddings pass a norm before the first block (BERT), where hidden-dimension gates act on
    # the norm; None: the structure gates do not know the family
    embedding_norm: bool | None = None
    adaptor_targets: tuple[str, ...] = ()   # LoRA's default targets (the papers': query and value)
    mlp: tuple[str, ...] = ()               # the block's feed-forward linears, by name

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        """The block list; `blocks_attr` may name several paths (e.g. a bare encoder vs a task head)."""
        for path in self.blocks_attr.split("|"):
            try:
                return operator.attrgetter(path)(model)
            except AttributeError:
                continue
        raise UnsupportedModel(f"no blocks at {self.blocks_attr} in {type(model).__name__}")

    def linears(self, block: nn.Module) -> dict[str, nn.Module]:
        """The block's compressible linears, in true-sequential order."""
        mods = dict(block.named_modules())
        return {name: mods[name] for group in self.sequential for name in group}


_LLAMA_LIKE = (("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), ("self_attn.o_proj",),
               ("mlp.gate_proj", "mlp.up_proj"), ("mlp.down_proj",))

FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("llama", ("llama", "mistral", "qwen2"), "model.layers", _LLAMA_LIKE,
           (("input_layernorm", _LLAMA_LIKE[0]), ("post_attention_layernorm", _LLAMA_LIKE[2]),
            ("self_attn.v_proj", ("self_attn.o_proj",)), ("mlp.up_proj", ("mlp.down_proj",))),
           structure=Structure("self_attn", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                               "self_attn.o_proj", ("mlp.gate_proj", "mlp.up_proj"), "mlp.down_proj"),
           embedding_norm=False, mlp=("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")),
    Family("opt", ("opt",), "model.decoder.layers",
           (("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), ("self_attn.out_proj",),
            ("fc1",), ("fc2",)),
           (("self_attn_layer_norm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
            ("final_layer_norm", ("fc1",)), ("self_attn.v_proj", ("self_attn.out_proj",)),
            ("fc1", ("fc2",))),  # OPT's ReLU is positively homogeneous
           structure=Structure("self_attn", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                               "self_attn.out_proj", ("fc1",), "fc2", ("num_heads",)),
           mlp=("fc1", "fc2")),
    Family("gpt2", ("gpt2",), "transformer.h",
           (("attn.c_attn",), ("attn.c_proj",), ("mlp.c_fc",), ("mlp.c_proj",)),
           (("ln_1", ("attn.c_attn",)), ("ln_2", ("mlp.c_fc",))),
           # its structure once `unfuse_gpt2` has split c_attn into q, k, v linears and made every Conv1D a linear
           structure=Structure("attn", "attn.c_attn.q", "attn.c_attn.k", "attn.c_attn.v", "attn.c_proj",
                               ("mlp.c_fc",), "mlp.c_proj", ("num_heads",)),
           fused_qkv=True, embedding_norm=False, mlp=("mlp.c_fc", "mlp.c_proj")),
    Family("bert", ("bert", "roberta"), "bert.encoder.layer|roberta.encoder.layer|encoder.layer",
           (("attention.self.query", "attention.self.key", "attention.self.value"), ("attention.output.dense",),
            ("intermediate.dense",), ("output.dense",)), role="encoder", attention="bert",
           structure=Structure("attention.self", "attention.self.query", "attention.self.key", "attention.self.value",
                               "attention.output.dense", ("intermediate.dense",), "output.dense",
                               ("num_attention_heads",)),
           embedding_norm=True, adaptor_targets=("query", "value"), mlp=("intermediate.dense", "output.dense")),
    Family("deberta_v2", ("deberta-v2",), "deberta.encoder.layer|encoder.layer",
           (("attention.self.query_proj", "attention.self.key_proj", "attention.self.value_proj"),
            ("attention.output.dense",), ("intermediate.dense",), ("output.dense",)), role="encoder",
           attention="deberta", adaptor_targets=("query_proj", "value_proj"), mlp=("intermediate.dense", "output.dense")),
    # BLOOM: ALiBi position biases reach each block as an argument, which the engine's captured
    # block inputs carry like any other
    Family("bloom", ("bloom",), "transformer.h",
           (("self_attention.query_key_value",), ("self_attention.dense",), ("mlp.dense_h_to_4h",),
            ("mlp.dense_4h_to_h",)),
           (("input_layernorm", ("self_attention.query_key_value",)),
            ("post_attention_layernorm", ("mlp.dense_h_to_4h",))),
           mlp=("mlp.dense_h_to_4h", "mlp.dense_4h_to_h")),
    Family("gpt_neox", ("gpt_neox",), "gpt_neox.layers",
           (("attention.query_key_value",), ("attention.dense",), ("mlp.dense_h_to_4h",),
            ("mlp.dense_4h_to_h",)),
           (("input_layernorm", ("attention.query_key_value",)),
            ("post_attention_layernorm", ("mlp.dense_h_to_4h",))),
           mlp=("mlp.dense_h_to_4h", "mlp.dense_4h_to_h")),
)}


class UnsupportedModel(ValueError):
    pass


def register_family(family: Family) -> Family:
    """Add a family to FAMILIES (a model family outside this module: a newcomer's, a plugin's)."""
    taken = {t: f.name for f in FAMILIES.values() if f.name != family.name for t in f.model_types}
    clash = sorted(t for t in family.model_types if t in taken)
    if family.name in FAMILIES and FAMILIES[family.name] != family or clash:
        raise ValueError(f"family '{family.name}' clashes with a known one"
                         + (f": model types {clash} are {sorted({taken[t] for t in clash})}'s" if clash else ""))
    FAMILIES[family.name] = family
    return family


def family_of(model_type: str) -> Family:
    for fam in FAMILIES.values():
        if model_type in fam.model_types:
            return fam
    known = sorted(t for f in FAMILIES.values() for t in f.model_types)
    raise UnsupportedModel(
        f"model_type '{model_type}' is not a family the engine knows ({', '.join(known)}); "
        f"add a Family entry in methods/core/arch.py naming its blocks and linears")


def weight_matrix(module: nn.Module) -> torch.Tensor:
    """The layer's weight as an (out_features, in_features) view; GPT-2's Conv1D stores it transposed."""
    w = module.weight.data
    return w.t() if isinstance(module, Conv1D) else w


def in_features(module: nn.Module) -> int:
    return weight_matrix(module).shape[1]


@torch.no_grad()
def fold_scale(block: nn.Module, prev: str, linears: tuple[str, ...], s: torch.Tensor) -> None:
    """Divide the previous op's output channels by s and multiply the linears' input columns by s:
    the block computes the same function (up to rounding), with the linears' inputs scaled by 1/s."""
    mods = dict(block.named_modules())
    op = mods[prev]
    if op.weight.dim() == 1:  # LayerNorm / RMSNorm affine weight (and bias)
        op.weight.div_(s.to(op.weight.dtype))
    else:
        weight_matrix(op).div_(s.to(op.weight.dtype).unsqueeze(1))
    if getattr(op, "bias", None) is not None:
        op.bias.div_(s.to(op.bias.dtype))
    for name in linears:
        weight_matrix(mods[name]).mul_(s.to(mods[name].weight.dtype).unsqueeze(0))


def scale_pairs(family: Family, block: nn.Module, norms_only: bool = False) -> list[tuple[str, tuple[str, ...]]]:
    """The family's scale pairs whose shapes agree in this block (v_proj -> o_proj fails under GQA)."""
    mods = dict(block.named_modules())
    out = []
    for prev, linears in family.scale_pairs:
        op = mods[prev]
        is_norm = op.weight.dim() == 1
        if norms_only and not is_norm:
            continue
        width = op.weight.shape[0] if is_norm else weight_matrix(op).shape[0]
        if all(in_features(mods[n]) == width for n in linears):
            out.append((prev, linears))
    return out


def replace_module(root: nn.Module, name: str, new: nn.Module) -> None:
    """Put `new` at the dotted path `name` under `root` (a linear swapped for its compressed form)."""
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)
