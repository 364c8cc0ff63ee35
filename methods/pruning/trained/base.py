"""What every prune-while-training method shares: its preset and table metadata, the training
loss (the task loss, plus logit distillation from the fine-tuned teacher when asked), the
length of the run it schedules pruning over, and the deviations it records."""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable, Sequence

import torch
from torch import nn

from methods.core.base import TableRow, TrainingInputs
from methods.training.objectives import prediction_loss
from methods.training.row_method import RowMethod
from methods.core.settings import Positive

Extra = Callable[[Any, Any, dict], tuple[torch.Tensor, dict[str, torch.Tensor]]]  # (s_out, t_out, batch)


class TrainedPruning(RowMethod):
    """A prune-while-training row (see RowMethod for `distill` and `deviations`)."""

    granularity: str = "W"

    def __init__(self, preset: str, label: str, ref: str, distill: float = 1.0, temperature: Positive = 2.0,
                 deviations: Sequence[str] = (), tables: Sequence[str] = ("table2",)):
        super().__init__(preset, label, ref, distill, temperature, deviations, tables)

    def row(self) -> TableRow:
        return TableRow(self.lab, self.ref, self.granularity, cost="high", columns={"preset": self.preset})

    def loss(self, extra: Extra | None = None):
        """The trainer's loss: prediction loss, plus a method's own term (regulariser, contrast)."""
        def fn(s_out, t_out, batch):
            loss, parts = prediction_loss(s_out, t_out, self.distill, self.temperature)
            if extra is not None:
                more, more_parts = extra(s_out, t_out, batch)
                loss, parts = loss + more, {**parts, **more_parts}
            return loss, parts
        return fn

    def teacher(self, inputs: TrainingInputs) -> nn.Module | None:
        """The frozen model the trainer runs beside the student (its outputs reach the loss)."""
        return inputs.teacher

    @staticmethod
    def dev_score(inputs: TrainingInputs):
        """The task's dev score of the wrapped model, under its masks."""
        if inputs.evaluate is None:
            return None

        def score(wrapped: nn.Module) -> float:
            wrapped.eval()  # deterministic gates and masks (the trainer sets train mode again)
            with wrapped.masked():
                return inputs.evaluate(wrapped.model)
        return score

    @staticmethod
    def total_steps(inputs: TrainingInputs) -> int:
        return inputs.trainer.total_steps(len(inputs.data(0)))

    def summary(self) -> dict[str, Any]:
        return {"preset": self.preset, "distill": self.distill, "temperature": self.temperature,
                "deviations": self.deviations, **self.facts}


class Wrapped(nn.Module):
    """The model plus a method's extra trainable parts (gates, thresholds, predictors), so that
    the trainer optimises and checkpoints them together."""

    def __init__(self, model: nn.Module, extra: nn.Module | None = None, hidden_states: bool = False):
        super().__init__()
        self.model, self.hidden_states = model, hidden_states
        self.extra = extra if extra is not None else nn.Module()

    def masked(self):
        """The context in which the plain model computes as masked (weight masks live in the model)."""
        return nullcontext()

    def forward(self, **batch):
        if self.hidden_states:
            batch = {**batch, "output_hidden_states": True}
        return self.model(**batch)
