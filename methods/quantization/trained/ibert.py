"""I-BERT (Kim et al., 2021) [70]: integer-only BERT. Every linear holds 8-bit symmetric weights (one
scale per output channel) and takes 8-bit activations; the non-linear operations run integer
kernels (integer_ops.py) instead of floating point:

    GELU       → i-GELU (second-order polynomial for erf)
    softmax    → i-softmax (i-exp by shifts and a polynomial; 8-bit output), with 8-bit q, k, v
    LayerNorm  → i-LayerNorm (integer mean, variance and Newton square root)

then quantization-aware fine-tuning on the task (floors pass gradients straight through). Table
4's row: RoBERTa-large INT8, 8 bits against fp32 (75%); its 4× speedup is TensorRT INT8 on a T4.

Simulated integer arithmetic, stated here and in the record: the kernels compute on integers
carried in float64 tensors; the integer input of each kernel is its float input requantized to
`kernel_bits` bits per tensor (dynamic), where I-BERT passes the INT32 accumulator and its scale
along; the LayerNorm affine and the attention's q·kᵀ and p·v run in floating point on the
integer-valued operands. No speedup is claimed (nothing here runs integer kernels)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from methods.core.base import register
from methods.quantization.integer_ops import i_gelu, i_layernorm, i_softmax, to_int
from methods.quantization.trained.fake_quant import ActQuant, UniformWeight, WeightQuantizer, ste_round
from methods.quantization.trained.qat import QATMethod
from methods.core.settings import Bits

ATTENTION = "ibert_integer"


class IntGELU(nn.Module):
    def __init__(self, bits: int = 16):
        super().__init__()
        self.bits = bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, s = to_int(x, self.bits)
        q_out, s_out = i_gelu(q, s)
        return (q_out * s_out).to(x.dtype)


class IntLayerNorm(nn.Module):
    """i-LayerNorm with the original affine (weight, bias) applied to the normalised integers."""

    def __init__(self, ln: nn.LayerNorm, bits: int = 16):
        super().__init__()
        self.weight, self.bias, self.bits = ln.weight, ln.bias, bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, _ = to_int(x, self.bits)
        y, s = i_layernorm(q)
        return ((y * s).to(x.dtype)) * self.weight + self.bias


def _fake8(x: torch.Tensor) -> torch.Tensor:
    s = x.detach().abs().amax().clamp_min(1e-8) / 127
    return torch.clamp(ste_round(x / s), -128, 127) * s


def integer_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """BERT's eager attention with 8-bit q, k, v, an integer softmax and 8-bit probabilities."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    scores = torch.matmul(_fake8(query), _fake8(key).transpose(2, 3)) * scaling
    keep = None
    if attention_mask is not None:
        keep = (attention_mask > torch.finfo(attention_mask.dtype).min / 2).expand_as(scores)
    q, s = to_int(scores, getattr(module, "ibert_kernel_bits", 16), keep)
    p, sp = i_softmax(q, s, keep)
    probs = (p * sp).to(query.dtype)
    probs = nn.functional.dropout(probs, p=dropout, training=module.training)
    out = torch.matmul(probs, _fake8(value)).transpose(1, 2).contiguous()
    return out, probs


def install_integer_kernels(model: nn.Module, bits: int = 16) -> dict[str, int]:
    """Swap GELU, LayerNorm and the attention of a BERT-family encoder for I-BERT's kernels."""
    from transformers import AttentionInterface
    AttentionInterface.register(ATTENTION, integer_attention)
    counts = {"gelu": 0, "layernorm": 0, "attention": 0}
    for name, module in list(model.named_modules()):
        if hasattr(module, "intermediate_act_fn"):
            module.intermediate_act_fn = IntGELU(bits)
            counts["gelu"] += 1
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.LayerNorm):
                setattr(module, child_name, IntLayerNorm(child, bits))
                counts["layernorm"] += 1
        if hasattr(module, "attention_head_size"):
            module.ibert_kernel_bits = bits
            counts["attention"] += 1
    model.set_attn_implementation(ATTENTION)
    if not counts["gelu"] or not counts["attention"]:
        raise ValueError("I-BERT's integer kernels need a BERT-family encoder (GELU intermediate, self-attention)")
    return counts


@register("ibert")
class IBERT(QATMethod):
    """`kernel_bits`: the precision of the integer inputs of the non-linear kernels."""
    smoke = ({},)

    def __init__(self, wbits: Bits = 8, abits: Bits = 8, kernel_bits: Bits = 16, embeddings: bool = True,
                 distill: float = 0.0, preset: str = "ibert", **kw: Any):
        kw.setdefault("deviations", ["simulated integer arithmetic (float64-carried integers), no speedup",
                                     f"kernel inputs requantized to {kernel_bits} bits per tensor, not the INT32 "
                                     f"accumulator", "LayerNorm affine in floating point"])
        super().__init__(preset=preset, label="I-BERT", ref="70", wbits=wbits, abits=abits, embeddings=embeddings,
                         distill=distill, **kw)
        self.kernel_bits = kernel_bits

    def check_family(self, family, config=None) -> None:
        if family.attention != "bert":
            raise ValueError(f"I-BERT's integer kernels are written for BERT-family encoders, not '{family.name}'")

    def weight_quantizer(self, key: str, weight: torch.Tensor) -> WeightQuantizer:
        return UniformWeight(self.wbits, sym=True, per="tensor" if key == "embeddings" else "channel")

    def act_quantizer(self, key: str) -> ActQuant | None:
        return ActQuant(self.abits) if self.abits < 16 else None

    def quantize(self, model: nn.Module, family):
        self.facts["integer_kernels"] = install_integer_kernels(model, self.kernel_bits)
        return super().quantize(model, family)

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "kernel_bits": self.kernel_bits, "arithmetic": "simulated integer"}
