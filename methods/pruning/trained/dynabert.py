"""DynaBERT (Hou et al. 2020) [56], width-adaptive: heads and neurons rewired by importance, the
sub-networks of every width multiplier trained together by distillation from the fine-tuned
teacher, then the sub-network that meets the FLOPs target kept.

    importance I_h = Σ_batches |∂L/∂m_h|, I_n likewise (Michel et al.'s mask gradients);
        width m keeps the ⌈m·H⌉ most important heads and ⌈m·N⌉ neurons of every layer
    each step: L = Σ_{m ∈ widths} KD(z_m, z_T) + MSE(hidden_m, hidden_T)   (all widths, one batch)
    choose the widest m whose encoder FLOPs are ≤ (1 − rate) of the dense model's; remove the rest

Deviation: width-adaptive only (DynaBERT_W); the depth multipliers are not trained.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from methods.core.base import CompressionResult, Kind, RateBasis, TrainingInputs, register
from methods.core.model_facts import ModelSize
from methods.pruning.encoder_units import (encoder_flops, masks_applied, prune_with_masks, require_encoder,
                                           unit_flops)
from methods.pruning.trained.base import TrainedPruning
from methods.core.calibration import to_device
from methods.training.objectives import kd_loss
from methods.pruning.trained.cap import HiddenStates
from methods.pruning.trained.structured import unit_counts
from methods.core.settings import Count, Fraction


def width_masks(order_h: torch.Tensor, order_n: torch.Tensor, width: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks keeping the ⌈width·count⌉ first units of each layer's importance order."""
    hm = torch.zeros(order_h.shape, device=order_h.device)
    nm = torch.zeros(order_n.shape, device=order_n.device)
    kh, kn = math.ceil(width * order_h.shape[1]), math.ceil(width * order_n.shape[1])
    hm.scatter_(1, order_h[:, :kh], 1.0)
    nm.scatter_(1, order_n[:, :kn], 1.0)
    return hm, nm


class WidthAdaptive(nn.Module):
    """forward returns the outputs of every width's sub-network on the batch."""

    def __init__(self, model: nn.Module, family, masks: list[tuple[torch.Tensor, torch.Tensor]]):
        super().__init__()
        self.model, self.family, self.widths = model, family, masks

    def forward(self, **batch):
        outs = []
        for hm, nm in self.widths:
            with masks_applied(self.model, self.family, hm, nm):
                outs.append(self.model(**batch, output_hidden_states=True))
        return outs


@register("dynabert")
class DynaBERT(TrainedPruning):
    smoke = ({"rate": 0.5, "widths": [1.0, 0.5]},)
    physical = True
    granularity = "N,H"

    def __init__(self, rate: Fraction = 0.75, widths: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25),
                 importance_batches: Count = 8, hidden: float = 1.0, seq_len: Count = 128, preset: str = "dynabert",
                 label: str = "DynaBERT", ref: str = "56", **kw: Any):
        kw.setdefault("deviations", ["width-adaptive only (no depth multipliers)"])
        super().__init__(preset=preset, label=label, ref=ref, **kw)
        if not 0 < rate < 1:
            raise ValueError(f"rate (the fraction of encoder FLOPs removed) must lie in (0, 1), got {rate}")
        if not widths or any(not 0 < w <= 1 for w in widths):
            raise ValueError(f"widths must be fractions in (0, 1], got {widths}")
        self.rate, self.widths, self.importance_batches = rate, tuple(sorted(widths, reverse=True)), importance_batches
        self.hidden, self.seq_len = hidden, seq_len

    def check_family(self, family, config=None) -> None:
        require_encoder(family, self.name)
        if not self.distill:
            raise ValueError("DynaBERT trains its sub-networks by distillation: distill must be > 0")

    def teacher(self, inputs: TrainingInputs) -> nn.Module | None:
        return HiddenStates(inputs.teacher)

    def importance(self, model, family, inputs: TrainingInputs, device) -> tuple[torch.Tensor, torch.Tensor]:
        L, H, N = unit_counts(model, family)
        hm = torch.ones(L, H, device=device, requires_grad=True)
        nm = torch.ones(L, N, device=device, requires_grad=True)
        ih, in_ = torch.zeros(L, H, device=device), torch.zeros(L, N, device=device)
        model.eval()
        for b in inputs.data(0)[: self.importance_batches]:
            with masks_applied(model, family, hm, nm):
                loss = model(**to_device(b, device)).loss
            gh, gn = torch.autograd.grad(loss, (hm, nm))
            ih += gh.abs()
            in_ += gn.abs()
        return ih, in_

    def compress_trained(self, model: nn.Module, family, inputs: TrainingInputs, device: torch.device) -> nn.Module:
        model.to(device)
        ih, in_ = self.importance(model, family, inputs, device)
        order_h, order_n = ih.argsort(1, descending=True), in_.argsort(1, descending=True)
        masks = [width_masks(order_h, order_n, w) for w in self.widths]
        wrapped = WidthAdaptive(model, family, masks)

        def loss(outs, t_out, batch):
            total, parts = 0.0, {}
            for w, out in zip(self.widths, outs):
                kd = kd_loss(out, t_out, self.temperature)
                hid = torch.stack([F.mse_loss(a, b) for a, b in zip(out.hidden_states, t_out.hidden_states)]).sum()
                total = total + self.distill * kd + self.hidden * hid
                parts[f"w{w:g}"] = kd.detach()
            return total, parts
        evaluate = None if inputs.evaluate is None else lambda w: inputs.evaluate(w.model)  # the full width
        inputs.fit(wrapped, loss, teacher=self.teacher(inputs), evaluate=evaluate)
        flops_before = encoder_flops(model, family, self.seq_len)
        head_f, neuron_f = unit_flops(model, self.seq_len)
        chosen = None
        for w, (hm, nm) in zip(self.widths, masks):  # widest first
            kept = sum(int(h.sum()) * head_f + int(n.sum()) * neuron_f for h, n in zip(hm, nm))
            if kept <= (1 - self.rate) * flops_before:
                chosen = (w, hm, nm)
                break
        if chosen is None:
            raise ValueError(f"no width in {self.widths} removes {self.rate:.0%} of the FLOPs; add a smaller width")
        w, hm, nm = chosen
        prune_with_masks(model, family, hm, nm)
        self.facts.update(width=w, flops_before=flops_before, flops_after=encoder_flops(model, family, self.seq_len),
                          seq_len_for_flops=self.seq_len)
        return model.eval()

    def result(self, before: ModelSize, after: ModelSize) -> CompressionResult:
        f = self.facts
        return CompressionResult(Kind.STRUCTURED, "N,H", before, after, RateBasis.FLOPS,
                                 flops_before=f["flops_before"], flops_after=f["flops_after"], facts=self.summary())

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "rate_target": self.rate, "widths": list(self.widths)}
