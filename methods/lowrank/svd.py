"""Low-rank factorisation of the original parameters (Table 7, target P).

    for every linear of every block:  W ≈ B·A at the rank the target rate allows
        svd:    truncated SVD                                   (Eckart–Young optimal)
        fwsvd:  SVD of diag(d)·W, d_i = √(row-wise Fisher)      (Hsu et al. 2022)
    optional recovery through the shared trainer:
        labels:  fine-tune on the task
        distill: logits and hidden states of the dense teacher, layer to layer (Noach & Goldberg 2020)

The rate is the fraction of the factorised matrices' parameters removed (the factors are two
linears, so the model is physically smaller and its speedup is measured).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from methods.core.base import (CompressionResult, Kind, RateBasis, TableRow, TrainedMethod, TrainingInputs,
                               register)
from methods.core.model_facts import ModelSize
from methods.lowrank.factorized import factorize, rank_for_rate
from methods.lowrank.fisher import row_fisher
from methods.core.settings import Count, Fraction
from methods.core.wrapped_linears import block_linears, wrap_block_linears

FINETUNES = ("none", "labels", "distill")


@register("svd")
class LowRankSVD(TrainedMethod):
    physical = True

    def __init__(self, rate: Fraction = 0.5, weighting: str = "none", finetune: str = "none", fisher_batches: Count = 32,
                 label: str = "SVD", ref: str = "59", preset: str = "svd", distill_sources: dict | None = None):
        if not 0 < rate < 1:
            raise ValueError(f"rate is the fraction of the factorised parameters removed; got {rate}, need (0, 1)")
        if weighting not in ("none", "fisher"):
            raise ValueError(f"weighting must be 'none' (SVD) or 'fisher' (FWSVD), got '{weighting}'")
        if finetune not in FINETUNES:
            raise ValueError(f"finetune must be one of {', '.join(FINETUNES)}, got '{finetune}'")
        self.rate, self.weighting, self.finetune, self.fisher_batches = rate, weighting, finetune, fisher_batches
        self.lab, self.ref, self.preset = label, ref, preset
        self.distill_sources = dict(distill_sources or {"logits": 1.0, "hidden": 1.0})
        self.ranks: dict[str, int] = {}
        self.dense_params = self.factor_params = 0

    @property
    def uses_teacher(self) -> bool:
        return self.finetune == "distill"

    @property
    def needs_training_data(self) -> bool:
        return self.weighting == "fisher" or self.finetune != "none"

    @property
    def rows(self) -> dict[str, TableRow]:
        return {"table7": TableRow(self.lab, self.ref, cost="high" if self.finetune != "none" else "low",
                                   columns={"target": "P", "preset": self.preset})}

    def compress_trained(self, model: nn.Module, family, inputs: TrainingInputs, device: torch.device) -> nn.Module:
        weights = None
        if self.weighting == "fisher":
            batches = inputs.data(0)[: self.fisher_batches]
            fisher = row_fisher(model, block_linears(model, family, "SVD"), batches, device)
            weights = {k: f.sqrt() for k, f in fisher.items()}

        def make(key: str, layer: nn.Linear) -> nn.Module:
            rank = rank_for_rate(layer.out_features, layer.in_features, self.rate)
            self.ranks[key] = rank
            self.dense_params += layer.weight.numel()
            new = factorize(layer, rank, None if weights is None else weights[key])
            self.factor_params += new.first.weight.numel() + new.second.weight.numel()
            return new
        wrap_block_linears(model, family, make, "SVD")
        if self.finetune == "labels":
            from methods.training.objectives import label_loss
            inputs.fit(model, label_loss)
        elif self.finetune == "distill":
            from methods.distillation.distill import distill_same_depth
            distill_same_depth(model, family, inputs, self.distill_sources)
        return model.eval()

    def result(self, before: ModelSize, after: ModelSize) -> CompressionResult:
        return CompressionResult(Kind.LOW_RANK, "P", before, after, rate_basis=RateBasis.LINEARS,
                                 comp_rate=1 - self.factor_params / self.dense_params, facts=self.summary())

    def summary(self) -> dict[str, Any]:
        return {"preset": self.preset, "weighting": self.weighting, "finetune": self.finetune,
                "target_rate": self.rate, "ranks": self.ranks, "factorised_params_before": self.dense_params,
                "factorised_params_after": self.factor_params}
