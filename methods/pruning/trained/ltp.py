"""LTP: learned token pruning (Kim et al. 2022) [73]. A threshold θ_j per layer on each token's
importance (the attention it receives, averaged over heads and queries, times the sequence
length); tokens under it leave the sequence.

    soft stage: m = σ((s − θ_j)/T) multiplies the token states; θ learned with
                L = task + KD + λ (Σ_j E[tokens kept]·cost_j / dense − (1 − rate))²
    hard stage: m = 1[s > θ_j] (tokens removed), θ fixed, fine-tuned

Deviations, so that the run lands on the table's rate within a short budget: the paper's L1
penalty on the soft masks is replaced by a penalty on the distance of the soft masks' FLOPs to the
rate; and where the soft stage ends short of it, one common offset is added to every learned
threshold (the smallest that meets the rate on 16 training batches) before the hard stage.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from methods.core.base import TrainingInputs, register
from methods.pruning.trained.token_drop import TokenPolicy, install
from methods.pruning.trained.token_methods import TokenPruning
from methods.core.settings import Fraction, Positive
from methods.core.search import smallest_meeting


class Thresholds(TokenPolicy):
    def __init__(self, layers: int, heads: int, temperature: Positive, lr_scale: Positive):
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(layers))
        self.theta.lr_scale, self.theta.no_decay = lr_scale, True
        self.heads, self.temperature = heads, temperature
        self.masks: list[torch.Tensor] = []

    def importance(self, sig, alive):
        return sig / self.heads   # Σ over queries of the mean probability over heads: 1 on average

    def soft(self, layer, sig, alive):
        if layer == 0:
            self.masks = []
        m = torch.sigmoid((self.importance(sig, alive) - self.theta[layer]) / self.temperature)
        m = torch.cat([torch.ones_like(m[:, :1]), m[:, 1:]], 1) * alive
        self.masks.append(m)
        return m

    def keep(self, layer, sig, alive):
        return self.importance(sig, alive) > self.theta[layer]


@register("ltp")
class LTP(TokenPruning):
    smoke = ({"rate": 0.5},)
    def __init__(self, rate: Fraction = 0.505, reg: float = 10.0, mask_temperature: Positive = 0.1,
                 threshold_lr_scale: Positive = 1000.0, preset: str = "ltp", label: str = "LTP", ref: str = "73",
                 **kw: Any):
        kw.setdefault("deviations", ["FLOPs-target penalty instead of the L1 penalty on the soft masks",
                                     "thresholds offset by one constant to the rate before the hard stage"])
        super().__init__(rate=rate, preset=preset, label=label, ref=ref, **kw)
        self.reg, self.mask_temperature, self.lr_scale = reg, mask_temperature, threshold_lr_scale

    def compress_trained(self, model: nn.Module, family, inputs: TrainingInputs, device: torch.device) -> nn.Module:
        cfg = model.config
        policy = Thresholds(len(family.blocks(model)), cfg.num_attention_heads, self.mask_temperature,
                            self.lr_scale).to(device)
        enc = install(model, policy)
        model.to(device)
        d, f = cfg.hidden_size, cfg.intermediate_size

        def extra(s_out, t_out, batch):
            n0 = batch["attention_mask"].sum(1).float()
            cost = lambda n: 2 * n * (4 * d * d + 2 * d * f) + 4 * n * n * d  # noqa: E731
            # layer j runs on the tokens the masks of layers < j kept (the first layer on all)
            kept = [n0] + [m.sum(1) for m in policy.masks[:-1]]
            frac = (sum(cost(n) for n in kept) / (len(kept) * cost(n0))).mean()
            return self.reg * (frac - (1 - self.rate)) ** 2, {"flops_kept": frac.detach()}
        def calibrate() -> None:  # the hard stage starts at the rate (see the module docstring)
            self.facts["learned_thresholds"] = policy.theta.detach().tolist()
            self.facts["threshold_offset"] = self.offset_to_rate(model, enc, inputs, device)
        self.run_stages(model, enc, inputs, device, extra=extra, after_soft=calibrate)
        self.facts["thresholds"] = policy.theta.detach().tolist()
        return model.eval()

    @torch.no_grad()
    def offset_to_rate(self, model, enc, inputs, device) -> float:
        """The smallest offset c ≥ 0 added to every threshold with which the hard-stage FLOPs on
        the first 16 training batches meet the target (bisection); the thresholds keep it."""
        batches = inputs.data(0)[:16]
        enc.hard = True
        theta = enc.policy.theta.detach().clone()

        def meets(c: float) -> bool:
            enc.policy.theta.copy_(theta + c)
            dense, kept = self.measure(model, enc, batches, device)
            return kept <= (1 - self.rate) * dense

        offset = smallest_meeting(meets, 14, cap=1e3)
        enc.policy.theta.copy_(theta + offset)
        model.train()
        return offset
