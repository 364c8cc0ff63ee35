"""Sajjad et al. (2023) [120], "On the effect of dropping layers of pre-trained transformer
models": top-layer dropping followed by fine-tuning on the task (the paper's setting; the
post-training variant is `block_drop rule=top`).

    delete the top round(rate·L) blocks;  fine-tune the remaining model on the task [+ KD]

The rate is the fraction of the encoder's layers (and so of its block weights) removed.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from methods.core.base import CompressionResult, Kind, TrainingInputs, register
from methods.core.model_facts import ModelSize
from methods.core.surgery import delete_blocks
from methods.pruning.trained.base import TrainedPruning
from methods.pruning.trained.structured import block_params
from methods.core.settings import Fraction


@register("top_drop_ft")
class TopDropFinetune(TrainedPruning):
    smoke = ({"rate": 0.5},)
    physical = True
    granularity = "L"

    def __init__(self, rate: Fraction = 0.5, preset: str = "sajjad_ft", label: str = "Sajjad et al.", ref: str = "120",
                 distill: float = 0.0, **kw: Any):
        super().__init__(preset=preset, label=label, ref=ref, distill=distill, **kw)
        if not 0 < rate < 1:
            raise ValueError(f"rate (the fraction of the layers dropped) must lie in (0, 1), got {rate}")
        self.rate = rate

    def dropped(self, layers: int) -> int:
        return round(self.rate * layers)

    def check_family(self, family, config=None) -> None:
        layers = getattr(config, "num_hidden_layers", None)
        if layers is not None and not 0 < self.dropped(layers) < layers:
            raise ValueError(f"rate {self.rate} drops {self.dropped(layers)} of the model's {layers} layers; "
                             f"pick a rate that drops at least one and keeps at least one")

    def compress_trained(self, model: nn.Module, family, inputs: TrainingInputs, device: torch.device) -> nn.Module:
        before = block_params(model, family)
        n = len(family.blocks(model))
        drop = list(range(n - self.dropped(n), n))
        delete_blocks(model, family, drop)
        inputs.fit(model.to(device), self.loss(), teacher=self.teacher(inputs))
        self.facts.update(dropped=drop, block_params_before=before,
                          block_params_after=block_params(model, family))
        return model.eval()

    def result(self, before: ModelSize, after: ModelSize) -> CompressionResult:
        f = self.facts
        return CompressionResult(Kind.STRUCTURED, "L", before, after,
                                 comp_rate=1 - f["block_params_after"] / f["block_params_before"], facts=self.summary())
