"""Wang et al. 2020 (FLOP: structured pruning of factorised weights) [141], with distillation.

    every block linear  W = P·diag(z)·Q   (full-rank SVD initialisation, P = U√Σ, Q = √Σ Vᵀ)
    z: hard concrete gates, one per rank-one component p_k q_kᵀ
    train (shared trainer):  task loss [+ logit distillation from the dense teacher]
                             + λ1 (ŝ − t) + λ2 (ŝ − t)²,   min over weights and gates, max over λ
        ŝ = 1 − E[parameters kept] / dense parameters,  E[kept] = Σ_k (in + out)·P(z_k ≠ 0)
    finalise: keep the components with the largest gate logits (ties: the larger singular value)
              until the factor budget (1 − t)·dense parameters is met, gates folded into P; two
              linears per matrix

The rate is the fraction of the factorised matrices' parameters removed (as for SVD).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from methods.core.base import (CompressionResult, Kind, RateBasis, TableRow, TrainedMethod, TrainingInputs,
                               register)
from methods.core.model_facts import ModelSize
from methods.core.outputs import task_logits
from methods.lowrank.factorized import FactorizedLinear, svd_factors
from methods.core.hard_concrete import HardConcrete, lagrangian
from methods.core.settings import Fraction, Positive
from methods.core.wrapped_linears import place_block_linears, wrap_block_linears


class GatedFactorized(nn.Module):
    """y = P·(z ⊙ (Q x)) + b, gates z over the rank-one components."""

    def __init__(self, layer: nn.Linear, gate_lr_scale: Positive):
        super().__init__()
        rank = min(layer.in_features, layer.out_features)
        q, p = svd_factors(layer.weight.data, rank)
        self.first = nn.Linear(layer.in_features, rank, bias=False)
        self.second = nn.Linear(rank, layer.out_features, bias=layer.bias is not None)
        with torch.no_grad():
            self.first.weight.copy_(q)
            self.second.weight.copy_(p)
            if layer.bias is not None:
                self.second.bias.copy_(layer.bias)
        self.gate = HardConcrete(rank, lr_scale=gate_lr_scale)
        self.in_features, self.out_features = layer.in_features, layer.out_features

    @property
    def weight(self) -> torch.Tensor:
        return (self.second.weight * self.gate.deterministic()) @ self.first.weight

    def expected_params(self) -> torch.Tensor:
        return (self.in_features + self.out_features) * self.gate.prob_nonzero().sum()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x) * self.gate())

    def finalise(self, keep: torch.Tensor) -> FactorizedLinear:
        z = self.gate.deterministic().detach()
        return FactorizedLinear(self.first.weight.data[keep], (self.second.weight.data * z)[:, keep],
                                None if self.second.bias is None else self.second.bias.data)


class _Pruned(nn.Module):
    """The model with its gated factors and the two Lagrange multipliers: what the trainer fits."""

    def __init__(self, model: nn.Module, gated: dict[str, GatedFactorized], dense_params: int, lam_lr_scale: Positive):
        super().__init__()
        self.model, self.dense_params = model, dense_params
        self.gated = list(gated.values())
        self.lam = nn.Parameter(torch.zeros(2))
        self.lam.lr_scale = lam_lr_scale

    def expected_sparsity(self) -> torch.Tensor:
        return 1 - torch.stack([g.expected_params() for g in self.gated]).sum() / self.dense_params

    def lagrangian(self, target: float) -> torch.Tensor:
        return lagrangian(self.lam, self.expected_sparsity() - target)

    def forward(self, **batch):
        return self.model(**batch)


@register("flop")
class FLOP(TrainedMethod):
    physical = True

    def __init__(self, rate: Fraction = 0.857, distill: bool = True, temperature: Positive = 1.0,
                 gate_lr_scale: Positive = 100.0, lambda_lr_scale: Positive = 100.0, label: str = "Wang et al.",
                 ref: str = "141", preset: str = "flop"):
        if not 0 < rate < 1:
            raise ValueError(f"rate is the fraction of the factorised parameters removed; got {rate}, need (0, 1)")
        self.rate, self.distill, self.temperature = rate, distill, temperature
        self.gate_lr_scale, self.lambda_lr_scale = gate_lr_scale, lambda_lr_scale
        self.lab, self.ref, self.preset = label, ref, preset
        self.ranks: dict[str, int] = {}
        self.dense_params = self.factor_params = 0
        self.expected_sparsity_end: float | None = None

    @property
    def uses_teacher(self) -> bool:
        return self.distill

    @property
    def rows(self) -> dict[str, TableRow]:
        return {"table7": TableRow(self.lab, self.ref, cost="high", columns={"target": "P", "preset": self.preset})}

    def compress_trained(self, model: nn.Module, family, inputs: TrainingInputs, device: torch.device) -> nn.Module:
        from methods.training.objectives import logit_kl
        from methods.distillation.taps import Tapped

        def gate(key: str, layer: nn.Linear) -> GatedFactorized:
            self.dense_params += layer.weight.numel()
            return GatedFactorized(layer, self.gate_lr_scale).to(layer.weight.device)
        gated = wrap_block_linears(model, family, gate, "FLOP")
        pruned = _Pruned(model, gated, self.dense_params, self.lambda_lr_scale)
        teacher = Tapped(inputs.teacher, family) if self.distill else None

        def loss(s, t, batch):
            task = s.loss
            parts = {"task": task.detach(), "sparsity": pruned.expected_sparsity().detach()}
            if t is not None:
                logits = task_logits(s)
                kd = torch.stack([logit_kl(a, b, self.temperature) for a, b in zip(logits, t.logits)]).mean()
                task = task + kd
                parts["kd"] = kd.detach()
            return task + pruned.lagrangian(self.rate), parts
        inputs.fit(pruned, loss, teacher=teacher)
        self.expected_sparsity_end = float(pruned.expected_sparsity().detach())
        keep = self._budget(gated)
        final = {key: g.finalise(keep[key]) for key, g in gated.items()}
        place_block_linears(model, family, final)
        for key, new in final.items():
            self.ranks[key] = new.rank
            self.factor_params += new.first.weight.numel() + new.second.weight.numel()
        return model.eval()

    def _budget(self, gated: dict[str, GatedFactorized]) -> dict[str, torch.Tensor]:
        """Components kept: the largest gate logits (with a non-zero gate) across all matrices, each
        costing in + out parameters, until (1 − rate)·dense parameters are spent."""
        items = []
        for key, g in gated.items():
            z = g.gate.deterministic().detach()
            # ties in the gate logits (short training) go to the larger component σ_k = ‖p_k‖·‖q_k‖
            sigma = (g.second.weight.norm(dim=0) * g.first.weight.norm(dim=1)).detach().tolist()
            for k, la in enumerate(g.gate.log_alpha.detach().tolist()):
                if z[k] > 0:
                    items.append((la, sigma[k], key, k, g.in_features + g.out_features))
        items.sort(key=lambda x: (-x[0], -x[1]))
        budget = (1 - self.rate) * self.dense_params
        chosen: dict[str, list[int]] = {key: [] for key in gated}
        spent = 0
        for _, _, key, k, cost in items:
            if spent + cost > budget:
                continue
            chosen[key].append(k)
            spent += cost
        for key, ks in chosen.items():
            if not ks:  # a matrix keeps at least its strongest component
                ks.append(int(gated[key].gate.log_alpha.argmax()))
        return {key: torch.tensor(sorted(ks)) for key, ks in chosen.items()}

    def result(self, before: ModelSize, after: ModelSize) -> CompressionResult:
        return CompressionResult(Kind.LOW_RANK, "P", before, after, rate_basis=RateBasis.LINEARS,
                                 comp_rate=1 - self.factor_params / self.dense_params, facts=self.summary())

    def summary(self) -> dict[str, Any]:
        return {"preset": self.preset, "target_rate": self.rate, "distill": self.distill, "ranks": self.ranks,
                "factorised_params_before": self.dense_params, "factorised_params_after": self.factor_params,
                "expected_sparsity_at_end_of_training": self.expected_sparsity_end}
