"""EBERT (Liu et al. 2021) [100]: dynamic structured pruning. A predictor per layer reads the
layer's input ([CLS] state) and decides, per example, which heads and FFN neurons run.

    g_l = W_l x_l[CLS] + b_l  →  head and neuron logits of layer l (b_l starts high: all kept)
    train: gates = 1[σ((g + logistic noise)/τ) > ½] forward, the sigmoid backward (straight-through)
    eval:  gates = 1[g > 0]
    L = task + KD + μ · (E[FLOPs kept]/FLOPs − (1 − rate))²
The rate is the mean fraction of encoder FLOPs removed over the task's training examples
(measured at the end with the evaluation gates); the masks differ per example, so the model is
not physically smaller and no speedup is measured here (the paper's needs its dynamic kernels).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from methods.core.base import CompressionResult, Kind, RateBasis, TrainingInputs, register
from methods.core.calibration import model_inputs
from methods.core.hooks import attach, forward_hooks
from methods.core.model_facts import ModelSize
from methods.pruning.encoder_units import encoder_flops, head_dim, require_encoder, unit_flops
from methods.pruning.structure import struct_spec
from methods.pruning.trained.base import TrainedPruning
from methods.pruning.trained.structured import unit_counts
from methods.core.settings import Count, Fraction, Positive


class Predictors(nn.Module):
    """Per layer: a linear map from the layer's [CLS] input to its head and neuron gate logits."""

    def __init__(self, layers: int, width: int, heads: int, neurons: int, bias: float, lr_scale: Positive):
        super().__init__()
        self.heads, self.neurons = heads, neurons
        self.maps = nn.ModuleList(nn.Linear(width, heads + neurons) for _ in range(layers))
        for m in self.maps:
            nn.init.zeros_(m.weight)
            nn.init.constant_(m.bias, bias)
            m.weight.lr_scale = m.bias.lr_scale = lr_scale
        self.tau = 1.0
        self.gates: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def decide(self, layer: int, x: torch.Tensor) -> None:
        g = self.maps[layer](x[:, 0].to(self.maps[layer].weight.dtype))
        if self.training:
            u = torch.rand_like(g).clamp(1e-6, 1 - 1e-6)
            soft = torch.sigmoid((g + u.log() - (1 - u).log()) / self.tau)
            gate = (soft > 0.5).to(soft.dtype) + soft - soft.detach()
        else:
            gate = (g > 0).to(g.dtype)
        self.gates[layer] = (gate[:, : self.heads], gate[:, self.heads:])


def hooks(model: nn.Module, family, pred: Predictors) -> tuple[list, list]:
    spec, hd = struct_spec(family), head_dim(model)
    pre = []
    for i, block in enumerate(family.blocks(model)):
        m = dict(block.named_modules())
        pre.append((block, lambda _m, a, i=i: pred.decide(i, a[0])))
        pre.append((m[spec.o], lambda _m, a, i=i: (a[0] * pred.gates[i][0].repeat_interleave(hd, -1)
                                                    .unsqueeze(1).to(a[0].dtype),)))
        pre.append((m[spec.mlp_down], lambda _m, a, i=i: (a[0] * pred.gates[i][1].unsqueeze(1).to(a[0].dtype),)))
    return pre, []


class Dynamic(nn.Module):
    def __init__(self, model: nn.Module, family, pred: Predictors):
        super().__init__()
        self.model, self.family, self.pred = model, family, pred

    @contextmanager
    def masked(self):
        pre, _ = hooks(self.model, self.family, self.pred)
        with forward_hooks(pre=pre):
            yield

    def forward(self, **batch):
        with self.masked():
            return self.model(**batch)


@register("ebert")
class EBERT(TrainedPruning):
    smoke = ({"rate": 0.5},)
    granularity = "N,H"

    def __init__(self, rate: Fraction = 0.5, flops_weight: float = 10.0, bias: float = 3.0, lr_scale: Positive = 100.0,
                 seq_len: Count = 128, preset: str = "ebert", label: str = "EBERT", ref: str = "100", **kw: Any):
        super().__init__(preset=preset, label=label, ref=ref, **kw)
        if not 0 < rate < 1:
            raise ValueError(f"rate (the fraction of encoder FLOPs removed) must lie in (0, 1), got {rate}")
        self.rate, self.flops_weight, self.bias, self.lr_scale, self.seq_len = rate, flops_weight, bias, lr_scale, \
            seq_len

    def check_family(self, family, config=None) -> None:
        require_encoder(family, self.name)

    def kept_fraction(self, pred: Predictors, head_f: int, neuron_f: int, dense: int) -> torch.Tensor:
        """Per example, the fraction of the encoder FLOPs its gates keep."""
        kept = sum(h.sum(-1) * head_f + n.sum(-1) * neuron_f for h, n in pred.gates.values())
        return kept / dense

    def compress_trained(self, model: nn.Module, family, inputs: TrainingInputs, device: torch.device) -> nn.Module:
        L, H, N = unit_counts(model, family)
        pred = Predictors(L, model.config.hidden_size, H, N, self.bias, self.lr_scale).to(device)
        model.ebert_predictors = pred  # part of the model from now on (moved, saved, evaluated with it)
        wrapped = Dynamic(model, family, pred)
        head_f, neuron_f = unit_flops(model, self.seq_len)
        dense = encoder_flops(model, family, self.seq_len)

        def extra(s_out, t_out, batch):
            frac = self.kept_fraction(pred, head_f, neuron_f, dense).mean()
            return self.flops_weight * (frac - (1 - self.rate)) ** 2, {"flops_kept": frac.detach()}
        inputs.fit(wrapped, self.loss(extra), teacher=self.teacher(inputs), evaluate=self.dev_score(inputs))
        model.eval()
        with torch.no_grad(), wrapped.masked():
            fracs = []
            for b in inputs.data(0)[:16]:
                model(**model_inputs(b, device))
                fracs.append(self.kept_fraction(pred, head_f, neuron_f, dense))
        kept = float(torch.cat(fracs).mean())
        pre, _ = hooks(model, family, pred)
        for j, (mod, fn) in enumerate(pre):  # the dynamic gates stay with the model for evaluation
            attach(mod, f"ebert{j}", fn)
        self.facts.update(flops_before=dense, flops_after=round(dense * kept), seq_len_for_flops=self.seq_len,
                          flops_kept_measured_on="the first 16 training batches, evaluation gates")
        return model

    def result(self, before: ModelSize, after: ModelSize) -> CompressionResult:
        f = self.facts
        return CompressionResult(Kind.STRUCTURED, "N,H", before, after, RateBasis.FLOPS,
                                 flops_before=f["flops_before"], flops_after=f["flops_after"], facts=self.summary())
