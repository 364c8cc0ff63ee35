"""BiT (Liu et al., 2022) [101]: binary weights and binary activations, reached by multi-step
distillation through a model of higher activation precision.

    weights:      ŵ = α·sign(w),  α = mean|w| per output row                (straight through)
    activations:  elastic binarization with a learned scale α and threshold β per input:
                  1 bit: x̂ = α·sign(x − β)     b bits: x̂ = α·clamp(round((x − β)/α), −2^(b−1), 2^(b−1)−1)
                  (α initialised from the first batch's mean|x|, gradients by autograd through
                  the straight-through round/sign, which gives BiT's ∂x̂/∂α and ∂x̂/∂β)
    multi-step distillation:  full precision → W1A2 (stage 1) → W1A1 (stage 2), each stage a
                  student of the previous model (logits + hidden states), the W1A1 student
                  initialised from the W1A2 one

Table 4's row: 1-bit weights, 96.9% against fp32.

Deviations: each linear's input is binarized (the paper also binarizes the attention scores and
the softmax output, with the {0, 1} variant of the elastic binarizer); the word embedding stays
full precision; two distillation steps (the paper's best chain has W1A4 → W1A2 → W1A1 on GLUE)."""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from methods.core.base import TrainingInputs, register
from methods.core.hooks import attach
from methods.distillation.distill import distill_same_depth
from methods.quantization.trained.fake_quant import BinaryWeight, FakeQuantLinear, WeightQuantizer
from methods.quantization.trained.qat import QATMethod
from methods.core.settings import Positive


def elastic(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, bits: int) -> torch.Tensor:
    """BiT's elastic quantizer (signed): α·sign(x − β) at 1 bit, a b-bit α-grid around β above."""
    s = (x - beta) / alpha
    if bits == 1:
        inside = s.clamp(-1, 1)
        hard = torch.where(s.detach() >= 0, 1.0, -1.0).to(x.dtype)
        return alpha * (hard + inside - inside.detach())
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    c = s.clamp(lo, hi)
    return alpha * (torch.round(c.detach()) + c - c.detach())


class ElasticAct(nn.Module):
    """Learned-scale, learned-threshold activation binarizer (or b-bit quantizer) of one input."""

    def __init__(self, bits: int):
        super().__init__()
        if not 1 <= bits <= 8:
            raise ValueError(f"elastic activation quantization takes 1..8 bits, got {bits}")
        self.bits = bits
        self.alpha = nn.Parameter(torch.ones(()))
        self.beta = nn.Parameter(torch.zeros(()))
        self.alpha.no_decay = self.beta.no_decay = True
        self.register_buffer("seen", torch.zeros((), dtype=torch.bool))

    def set_bits(self, bits: int) -> None:
        """A new precision: the scale is initialised again from the next batch."""
        self.bits = bits
        self.seen.fill_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not bool(self.seen):
            with torch.no_grad():   # 1 bit: α = E|x|, the L1-optimal binary scale; b bits: spread the grid over ±E|x|·2
                scale = x.detach().abs().mean().float().clamp_min(1e-5)
                self.alpha.fill_(scale if self.bits == 1 else 2 * scale / 2 ** (self.bits - 1))
                self.seen.fill_(True)
        return elastic(x, self.alpha.abs().clamp_min(1e-6), self.beta, self.bits)

    def attach_to(self, linear: nn.Linear) -> None:
        alpha, beta, bits = self.alpha.detach().abs().clamp_min(1e-6), self.beta.detach(), self.bits

        def hook(_module, args):
            return (elastic(args[0], alpha.to(args[0].dtype), beta.to(args[0].dtype), bits), *args[1:])
        attach(linear, "act_quant", hook)


@register("bit")
class BiT(QATMethod):
    """`steps_abits`: the activation bits of each distillation step, the last the final model's;
    each step gets an equal share of the training steps."""
    smoke = ({},)

    uses_teacher = True

    def __init__(self, steps_abits: tuple[int, ...] = (2, 1), hidden: float = 1.0, logits: float = 1.0,
                 temperature: Positive = 1.0, preset: str = "bit", **kw: Any):
        steps_abits = tuple(int(b) for b in steps_abits)
        if not steps_abits or any(not 1 <= b <= 8 for b in steps_abits):
            raise ValueError(f"steps_abits: activation bits (1..8) of each distillation step, got {steps_abits}")
        kw.setdefault("deviations", ["linear inputs binarized; attention scores and softmax output kept in full "
                                     "precision", "word embedding kept in full precision",
                                     f"distillation chain fp → {' → '.join(f'W1A{b}' for b in steps_abits)}"])
        super().__init__(preset=preset, label="BiT", ref="101", wbits=1, abits=steps_abits[-1], embeddings=False,
                         distill=logits, temperature=temperature, **kw)
        self.steps_abits = steps_abits
        self.sources = {"hidden": hidden, "logits": logits}

    def weight_quantizer(self, key: str, weight: torch.Tensor) -> WeightQuantizer:
        return BinaryWeight(per="channel")

    def act_quantizer(self, key: str) -> ElasticAct:
        return ElasticAct(self.steps_abits[0])

    def compress_trained(self, model: nn.Module, family, inputs: TrainingInputs, device: torch.device) -> nn.Module:
        sources = {k: v for k, v in self.sources.items() if v}
        total = inputs.trainer.total_steps(len(inputs.data(0)))
        n = len(self.steps_abits)
        shares = [total // n + (1 if i < total % n else 0) for i in range(n)]
        wrapped: dict[str, FakeQuantLinear] = self.quantize(model, family)
        model.to(device)
        teacher = inputs.teacher
        for i, (bits, steps) in enumerate(zip(self.steps_abits, shares)):
            for m in wrapped.values():
                m.act_q.set_bits(bits)
            distill_same_depth(model, family, inputs, sources, self.temperature, teacher=teacher,
                               steps=max(1, steps), name=f"W1A{bits}")
            if i + 1 < n:   # the next student learns from this one, frozen
                teacher = copy.deepcopy(model).eval().requires_grad_(False)
        self.facts["stage_steps"] = shares
        self.freeze(model, family, wrapped)
        return model.eval()

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "sources": self.sources, "steps_abits": list(self.steps_abits),
                "act_quantizer": "elastic binarization (learned α, β per linear input)"}
