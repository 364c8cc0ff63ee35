"""The shared run of the token-pruning methods: install the token-dropping encoder, train (soft
stage, then hard stage), and measure the FLOPs kept on training batches (per example, its own
tokens), for the FLOPs-based rate."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from methods.core.base import CompressionResult, Kind, RateBasis, TrainingInputs
from methods.core.calibration import model_inputs
from methods.core.model_facts import ModelSize
from methods.pruning.encoder_units import require_encoder
from methods.pruning.trained.base import TrainedPruning, Wrapped
from methods.pruning.trained.token_drop import TokenDroppingEncoder, token_flops
from methods.core.settings import Fraction, UnitInterval


class TokenPruning(TrainedPruning):
    physical = True
    dynamic_speedup = True
    granularity = "T"

    def __init__(self, rate: Fraction, soft_frac: UnitInterval = 0.5, **kw: Any):
        super().__init__(**kw)
        if not 0 < rate < 1:
            raise ValueError(f"rate (the fraction of encoder FLOPs removed) must lie in (0, 1), got {rate}")
        if not 0 < soft_frac < 1:
            raise ValueError(f"soft_frac (the soft stage's share of the steps) must lie in (0, 1), got {soft_frac}")
        self.rate, self.soft_frac = rate, soft_frac

    def check_family(self, family, config=None) -> None:
        require_encoder(family, self.name)

    @torch.no_grad()
    def measure(self, model: nn.Module, enc: TokenDroppingEncoder, batches, device) -> tuple[float, float]:
        """Mean dense and kept encoder FLOPs per example over `batches` (hard mode)."""
        dense = kept = 0.0
        n = 0
        model.eval()
        for b in batches:
            model(**model_inputs(b, device))
            layers = enc.tokens_per_layer
            kept += float(token_flops(model, layers).sum())
            dense += float(token_flops(model, [layers[0]] * len(layers)).sum())
            n += layers[0].numel()
        return dense / n, kept / n

    def run_stages(self, model: nn.Module, enc: TokenDroppingEncoder, inputs: TrainingInputs, device,
                   extra=None, on_step=None, after_soft=None) -> None:
        steps = self.total_steps(inputs)
        soft_steps = max(1, int(self.soft_frac * steps))
        wrapped = Wrapped(model, extra=enc.policy)
        enc.hard = False
        inputs.fit(wrapped, self.loss(extra), teacher=self.teacher(inputs), steps=soft_steps, name="soft",
                   on_step=on_step, evaluate=self.dev_score(inputs))
        if after_soft is not None:
            after_soft()
        enc.hard = True
        inputs.fit(wrapped, self.loss(), teacher=self.teacher(inputs), steps=steps - soft_steps, name="hard",
                   evaluate=self.dev_score(inputs))
        dense, kept = self.measure(model, enc, inputs.data(0)[:16], device)
        self.facts.update(flops_before=round(dense), flops_after=round(kept),
                          flops_measured_on="the first 16 training batches, each example at its own length")

    def result(self, before: ModelSize, after: ModelSize) -> CompressionResult:
        f = self.facts
        return CompressionResult(Kind.STRUCTURED, "T", before, after, RateBasis.FLOPS,
                                 flops_before=f["flops_before"], flops_after=f["flops_after"], facts=self.summary())
