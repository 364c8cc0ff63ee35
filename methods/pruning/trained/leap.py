"""LEAP: learnable pruning (Yao et al. 2021) [162]: a threshold learned per weight matrix, with a
regulariser that drives the kept fraction to the target, on top of learned importance scores.

    M = 1[S > τ_m]  forward,  σ((S − τ_m)/T)  backward            (per matrix m; S learned, |W|/mean|W| at start)
    density d = Σ_m Σ σ((S − τ_m)/T) / Σ_m numel_m
    L = task [+ KD] + λ · max(0, d − (1 − rate))²                   (one-sided: more pruning is not penalised)
    T annealed geometrically from T₀ to T_end over the run

The final masks are the learned thresholds' (the record keeps their density); where they keep
more than the target allows, the lowest margins S − τ over all matrices are pruned as well, so
the reported rate is the target's.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from methods.core.base import TrainingInputs, register
from methods.pruning.trained.base import Extra
from methods.pruning.trained.gradual import GradualUnstructured
from methods.pruning.trained.weight_masks import MaskedLinear, global_keep
from methods.core.settings import Fraction, Positive


@register("leap")
class LEAP(GradualUnstructured):
    smoke = ({"rate": 0.8, "interval": 2},)
    mode = "threshold"

    def __init__(self, rate: Fraction = 0.9, reg: float = 50.0, temperature_start: Positive = 0.5,
                 temperature_end: Positive = 0.02, score_lr_scale: Positive = 100.0, preset: str = "leap",
                 label: str = "LEAP", ref: str = "162", **kw: Any):
        super().__init__(rate=rate, preset=preset, label=label, ref=ref, **kw)
        self.reg, self.t0, self.t1, self.score_lr_scale = reg, temperature_start, temperature_end, score_lr_scale
        self._masked: dict[str, MaskedLinear] = {}
        self._steps = 1

    def mask_options(self) -> dict[str, Any]:
        return {"mode": "threshold", "score_lr_scale": self.score_lr_scale, "temperature": self.t0}

    def compress_trained(self, model: nn.Module, family, inputs: TrainingInputs, device: torch.device) -> nn.Module:
        self._steps = self.total_steps(inputs)
        return super().compress_trained(model, family, inputs, device)

    def extra_loss(self, masked: dict[str, MaskedLinear]) -> Extra:
        self._masked = masked
        with torch.no_grad():  # scores start at the normalised magnitudes; thresholds at 0 (dense)
            for m in masked.values():
                m.scores.copy_(m.weight.abs() / m.weight.abs().mean())
        total = sum(m.weight.numel() for m in masked.values())

        def term(s_out, t_out, batch):
            d = sum(m.soft_density() * m.weight.numel() for m in masked.values()) / total
            return self.reg * torch.relu(d - (1 - self.rate)) ** 2, {"density": d.detach()}
        return term

    def at_step(self, masked, step) -> None:
        frac = min(1.0, step / max(1, self._steps))
        t = self.t0 * (self.t1 / self.t0) ** frac
        for m in masked.values():
            m.temperature = t

    @torch.no_grad()
    def finish(self, masked: dict[str, MaskedLinear]) -> None:
        learned = {k: m.scores > m.threshold for k, m in masked.items()}
        kept = sum(int(v.sum()) for v in learned.values())
        total = sum(v.numel() for v in learned.values())
        self.facts["learned_density"] = kept / total
        self.facts["learned_thresholds"] = {k: float(m.threshold) for k, m in masked.items()}
        keep = global_keep({k: (m.scores - m.threshold).masked_fill(~learned[k], float("-inf"))
                            for k, m in masked.items()}, self.rate) if kept / total > 1 - self.rate else learned
        for k, m in masked.items():
            m.threshold.fill_(0.0)
            m.scores.copy_(keep[k].float() - 0.5)  # the final mask: scores above the zero threshold
