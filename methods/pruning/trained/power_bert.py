"""PoWER-BERT (Goyal et al. 2020) [47]: progressive word-vector elimination. After each layer the
tokens are ranked by significance (the attention they receive); the layer keeps its ℓ_j most
significant tokens ([CLS] always).

    1. configuration search (soft extract): token of rank k after layer j scaled by r_j[k] ∈ [0, 1],
       L = task + KD + λ Σ_j mean_k r_j[k];  ℓ_j = ⌈Σ_k r_j[k]⌉, made non-increasing
    2. retention scaled (one factor for all layers) until the encoder FLOPs meet the rate target
    3. re-training with hard extraction of the top-ℓ_j tokens

Deviation: step 2 (the paper takes the searched configuration as is; the harness meets the
table's rate).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from methods.core.base import TrainingInputs, register
from methods.pruning.trained.token_drop import TokenPolicy, install
from methods.pruning.trained.token_methods import TokenPruning
from methods.core.settings import Fraction, Positive
from methods.core.search import largest_meeting


class Retention(TokenPolicy):
    def __init__(self, layers: int, length: int, lr_scale: Positive = 100.0):
        super().__init__()
        self.r = nn.Parameter(torch.ones(layers, length))
        self.r.no_decay, self.r.lr_scale = True, lr_scale
        self.retention: list[int] | None = None

    def soft(self, layer, sig, alive):
        ranks = torch.argsort(torch.argsort(sig.masked_fill(~alive, -1.0), dim=1, descending=True), dim=1)
        m = self.r[layer].clamp(0, 1)[ranks]
        m = torch.cat([torch.ones_like(m[:, :1]), m[:, 1:]], 1)
        return m

    def keep(self, layer, sig, alive):
        k = min(self.retention[layer], sig.shape[1])
        s = sig.masked_fill(~alive, float("-inf"))
        s[:, 0] = float("inf")
        keep = torch.zeros_like(alive)
        keep.scatter_(1, torch.topk(s, k, dim=1)[1], True)
        return keep


@register("power_bert")
class PoWERBERT(TokenPruning):
    smoke = ({"rate": 0.5},)
    def __init__(self, rate: Fraction = 0.6, reg: float = 1e-3, retention_lr_scale: Positive = 100.0,
                 preset: str = "power_bert", label: str = "PoWER-BERT", ref: str = "47", **kw: Any):
        kw.setdefault("deviations", ["retention scaled to meet the FLOPs rate target after the search"])
        super().__init__(rate=rate, preset=preset, label=label, ref=ref, **kw)
        self.reg, self.retention_lr_scale = reg, retention_lr_scale

    def compress_trained(self, model: nn.Module, family, inputs: TrainingInputs, device: torch.device) -> nn.Module:
        length = inputs.data(0)[0]["input_ids"].shape[1]
        policy = Retention(len(family.blocks(model)), length, self.retention_lr_scale).to(device)
        enc = install(model, policy)
        model.to(device)

        def extra(s_out, t_out, batch):
            mass = policy.r.clamp(0, 1).mean(1).sum()
            return self.reg * mass * length, {"retained": mass.detach() / len(policy.r)}

        def clamp(step):
            with torch.no_grad():
                policy.r.clamp_(0, 1)

        def configure():
            searched = [math.ceil(float(x)) for x in policy.r.detach().clamp(0, 1).sum(1)]
            for j in range(1, len(searched)):
                searched[j] = min(searched[j], searched[j - 1])
            self.facts["searched_retention"] = searched
            self.scale_to_rate(model, enc, searched, inputs, device)
        self.run_stages(model, enc, inputs, device, extra=extra, on_step=clamp, after_soft=configure)
        self.facts["retention"] = policy.retention
        return model.eval()

    def scale_to_rate(self, model, enc, searched: list[int], inputs, device) -> None:
        """The largest α ≤ 1 with ℓ_j = max(1, ⌈α·searched_j⌉) meeting the FLOPs target (bisection)."""
        batches = inputs.data(0)[:16]
        enc.hard = True

        def meets(alpha: float) -> bool:
            enc.policy.retention = [max(1, math.ceil(alpha * s)) for s in searched]
            dense, kept = self.measure(model, enc, batches, device)
            return kept <= (1 - self.rate) * dense

        alpha = largest_meeting(meets, 0.0, 1.0, 14)
        self.facts["retention_scale"] = alpha
        enc.policy.retention = [max(1, math.ceil(alpha * s)) for s in searched]
        model.train()
