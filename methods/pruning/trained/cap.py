"""CAP: contrastive pruning (Xu et al. 2022) [159]. The pruned model's sentence representation is
pulled toward those of the pre-trained model (PrC), of its own earlier snapshots (SnC) and of the
fine-tuned model (FiC), and away from other examples', while movement pruning runs:

    z_i = normalised [CLS] state of example i;  P(i) = example i in every other view (and, for
    classification, the examples of the same label)
    L_con = −mean_i log Σ_{p∈P(i)} exp(z_i·z_p/τ) / Σ_{k≠i} exp(z_i·z_k/τ)
    L = task + KD + λ·L_con;  the views are frozen (pre-trained, snapshots at pruning steps, teacher)

`cap` prunes weights (learned top-k movement scores); `cap_structured` heads and neurons.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from methods.core.base import TrainingInputs, register
from methods.core.calibration import model_inputs
from methods.pruning.trained.base import Extra
from methods.pruning.trained.movement import MovementPruning
from methods.pruning.trained.structured import StructuredGradual
from methods.core.settings import Fraction, Positive


def cls_state(out) -> torch.Tensor:
    return out.hidden_states[-1][:, 0]


class HiddenStates(nn.Module):
    """A frozen view that also returns its hidden states."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, **batch):
        return self.model(**batch, output_hidden_states=True)


def contrastive_loss(z: torch.Tensor, views: list[torch.Tensor], tau: float,
                     labels: torch.Tensor | None = None) -> torch.Tensor:
    """Supervised contrastive loss of anchors z (B, d) against themselves and the views."""
    b = z.shape[0]
    allz = F.normalize(torch.cat([z, *views]).float(), dim=-1)
    anchor = allz[:b]
    sim = anchor @ allz.t() / tau                                       # (B, V·B)
    idx = torch.arange(allz.shape[0], device=z.device) % b
    pos = idx.unsqueeze(0) == torch.arange(b, device=z.device).unsqueeze(1)
    if labels is not None:
        lab = labels.repeat(allz.shape[0] // b)
        pos |= lab.unsqueeze(0) == labels.unsqueeze(1)
    self_ = torch.zeros_like(pos)
    self_[torch.arange(b), torch.arange(b)] = True
    pos &= ~self_
    sim = sim.masked_fill(self_, float("-inf"))
    log_den = torch.logsumexp(sim, dim=1)
    log_num = torch.logsumexp(sim.masked_fill(~pos, float("-inf")), dim=1)
    return (log_den - log_num).mean()


class Contrast:
    """The contrastive term, with its frozen views: pre-trained model, snapshots, teacher."""

    def __init__(self, weight: float, tau: float, snapshots: int, pretrained: nn.Module | None):
        self.weight, self.tau, self.keep = weight, tau, snapshots
        self.pretrained = pretrained.eval().requires_grad_(False) if pretrained is not None else None
        self.snapshots: list[nn.Module] = []

    def snapshot(self, wrapped: nn.Module) -> None:
        if self.keep:
            snap = copy.deepcopy(wrapped).eval().requires_grad_(False)
            self.snapshots = (self.snapshots + [snap])[-self.keep:]

    def __call__(self, s_out, t_out, batch):
        views = [cls_state(t_out)] if t_out is not None else []
        with torch.no_grad():
            inputs = model_inputs(batch)
            if self.pretrained is not None:
                views.append(cls_state(self.pretrained(**inputs, output_hidden_states=True)))
            for snap in self.snapshots:
                views.append(cls_state(snap(**inputs)))
        loss = contrastive_loss(cls_state(s_out), views, self.tau, batch.get("labels"))
        return self.weight * loss, {"contrast": loss.detach()}


class _CAP:
    hidden_states = True

    def _contrast_setup(self, inputs: TrainingInputs, device) -> Contrast:
        pre = inputs.pretrained() if self.use_pretrained and inputs.pretrained is not None else None
        self.contrast = Contrast(self.contrast_weight, self.tau, self.snapshots,
                                 pre.to(device) if pre is not None else None)
        return self.contrast

    def teacher(self, inputs: TrainingInputs) -> nn.Module | None:
        return HiddenStates(inputs.teacher) if inputs.teacher is not None else None


@register("cap")
class CAP(_CAP, MovementPruning):
    smoke = ({"rate": 0.8, "interval": 2},)
    def __init__(self, rate: Fraction = 0.9, contrast_weight: float = 0.1, tau: Positive = 0.1, snapshots: int = 1,
                 use_pretrained: bool = True, preset: str = "cap", label: str = "CAP", ref: str = "159", **kw: Any):
        super().__init__(rate=rate, preset=preset, label=label, ref=ref, **kw)
        self.contrast_weight, self.tau, self.snapshots, self.use_pretrained = contrast_weight, tau, snapshots, \
            use_pretrained

    def compress_trained(self, model, family, inputs, device):
        self._contrast_setup(inputs, device)
        return super().compress_trained(model, family, inputs, device)

    def extra_loss(self, masked) -> Extra:
        return self.contrast

    def prune(self, masked, sparsity, step, inputs, model) -> None:
        super().prune(masked, sparsity, step, inputs, model)
        if step:
            self.contrast.snapshot(self._wrapped)


@register("cap_structured")
class CAPStructured(_CAP, StructuredGradual):
    smoke = ({"rate": 0.5, "interval": 2},)
    def __init__(self, rate: Fraction = 0.9, contrast_weight: float = 0.1, tau: Positive = 0.1, snapshots: int = 1,
                 use_pretrained: bool = True, preset: str = "cap_structured", label: str = "CAP", ref: str = "159",
                 **kw: Any):
        super().__init__(rate=rate, preset=preset, label=label, ref=ref, **kw)
        self.contrast_weight, self.tau, self.snapshots, self.use_pretrained = contrast_weight, tau, snapshots, \
            use_pretrained

    def extra_loss(self, wrapped, inputs) -> Extra:
        return self._contrast_setup(inputs, next(wrapped.parameters()).device)

    def prune(self, masks, sparsity, step, inputs, wrapped) -> None:
        if step:
            self.contrast.snapshot(wrapped)
