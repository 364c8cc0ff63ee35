"""The gradual unstructured pruning driver: masks on every block linear, pruning steps on the
cubic schedule while the trainer fine-tunes, then the plain linears with their zeros.

    wrap every block linear in a MaskedLinear (mode set by the method)
    at each pruning step t:  method.prune(masked, s_t, step)       (fixed masks: new masks, updates)
    every step:              topk masks follow the schedule's s_t
    fit (task loss [+ KD] [+ the method's own term]); finalise the masks into zeros
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from methods.core.base import CompressionResult, Kind, TrainingInputs
from methods.core.model_facts import ModelSize
from methods.pruning.trained.base import Extra, TrainedPruning, Wrapped
from methods.pruning.trained.schedule import CubicSchedule
from methods.pruning.trained.weight_masks import MaskedLinear, unwrap_linears, wrap_linears
from methods.core.settings import Fraction, UnitInterval


class GradualUnstructured(TrainedPruning):
    """`rate`: the final zero fraction of the encoder's block linears; the schedule runs from
    `start_frac` to `end_frac` of the training steps, pruning every `interval` steps."""

    granularity = "W"
    mode = "fixed"
    hidden_states = False

    def __init__(self, rate: Fraction = 0.9, start_frac: UnitInterval = 0.1, end_frac: UnitInterval = 0.7, interval: int = 10,
                 initial: float = 0.0, **kw: Any):
        super().__init__(**kw)
        if not 0 < rate < 1:
            raise ValueError(f"rate (the final sparsity of the encoder weights) must lie in (0, 1), got {rate}")
        if not 0 <= start_frac <= end_frac <= 1:
            raise ValueError(f"need 0 <= start_frac ({start_frac}) <= end_frac ({end_frac}) <= 1")
        self.rate, self.start_frac, self.end_frac = rate, start_frac, end_frac
        self.interval, self.initial = interval, initial
        self.history: list[dict[str, float]] = []

    def check_family(self, family, config=None) -> None:
        pass

    def mask_options(self) -> dict[str, Any]:
        return {"mode": self.mode}

    def prune(self, masked: dict[str, MaskedLinear], sparsity: float, step: int, inputs: TrainingInputs,
              model: nn.Module) -> None:
        """A pruning step of the schedule: new fixed masks (and weight updates), or annealing."""

    def at_step(self, masked: dict[str, MaskedLinear], step: int) -> None:
        """State that follows the step count (restored on resume): annealed temperatures."""

    def extra_loss(self, masked: dict[str, MaskedLinear]) -> Extra | None:
        return None

    def compress_trained(self, model: nn.Module, family, inputs: TrainingInputs, device: torch.device) -> nn.Module:
        masked = wrap_linears(model, family, **self.mask_options())
        model.to(device)
        schedule = CubicSchedule.over(self.rate, self.total_steps(inputs), self.start_frac, self.end_frac,
                                      self.interval, self.initial)
        self.facts["schedule"] = {"start": schedule.start, "end": schedule.end, "interval": schedule.interval,
                                  "initial": schedule.initial, "final": schedule.final}

        def sync(step: int) -> None:
            for m in masked.values():
                m.sparsity = schedule.at(step)
            self.at_step(masked, step)

        def on_step(step: int) -> None:
            sync(step)
            if schedule.prunes_at(step):
                self.prune(masked, schedule.at(step), step, inputs, model)
                self.history.append({"step": step, "sparsity": schedule.at(step)})

        self._wrapped = Wrapped(model, hidden_states=self.hidden_states)
        on_step(0)
        inputs.fit(self._wrapped, self.loss(self.extra_loss(masked)), teacher=self.teacher(inputs), on_step=on_step,
                   on_resume=sync, evaluate=self.dev_score(inputs))
        self.finish(masked)
        unwrap_linears(model, family, masked)
        return model.eval()

    def finish(self, masked: dict[str, MaskedLinear]) -> None:
        """Last adjustments before the masks become zeros (exact final rate)."""

    def result(self, before: ModelSize, after: ModelSize) -> CompressionResult:
        return CompressionResult(Kind.UNSTRUCTURED, "W", before, after, facts=self.summary())

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "sparsity_target": self.rate, "pruning_steps": self.history}
