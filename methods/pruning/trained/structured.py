"""The gradual structured pruning driver (encoder heads and FFN neurons): unit masks applied by
hooks while the trainer fine-tunes, pruning steps on the cubic schedule, then physical removal.

    masks m_head (L, H), m_neuron (L, N) multiply head contexts and FFN activations
    topk:  m = TopK(S, s_t) of learned unit scores S (straight-through; structured movement)
    fixed: the method sets the masks at each pruning step (from its own unit scores)
    the same fraction s_t of all heads and of all neurons is pruned, so that s_t is the fraction of
    the blocks' weights removed; the masked units are removed at the end (a smaller, faster model)
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from methods.core.base import CompressionResult, Kind, RateBasis, TrainingInputs
from methods.core.model_facts import ModelSize
from methods.pruning.encoder_units import (encoder_flops, head_dim, layer_shapes, masks_applied, prune_with_masks,
                                           require_encoder)
from methods.pruning.structure import struct_spec, units
from methods.pruning.trained.base import Extra, TrainedPruning
from methods.pruning.trained.schedule import CubicSchedule
from methods.pruning.trained.weight_masks import TopKMask, topk_keep
from methods.core.settings import Count, Fraction, Positive, UnitInterval


def block_params(model: nn.Module, family) -> int:
    """Parameters inside the blocks' linears (weights and biases): the encoder weights."""
    return sum(p.numel() for block in family.blocks(model) for layer in family.linears(block).values()
               for p in layer.parameters())


def unit_counts(model: nn.Module, family) -> tuple[int, int, int]:
    """(layers, head units per layer, neurons per layer) of a dense model."""
    spec, hd = struct_spec(family), head_dim(model)
    block = family.blocks(model)[0]
    u = units(block, spec, hd)
    return len(family.blocks(model)), u.n_heads, u.n_channels


class UnitMasks(nn.Module):
    """Learned unit scores (topk) or fixed masks of every head unit and neuron."""

    def __init__(self, layers: int, heads: int, neurons: int, learned: bool, lr_scale: Positive):
        super().__init__()
        self.learned = learned
        self.register_buffer("head_mask", torch.ones(layers, heads))
        self.register_buffer("neuron_mask", torch.ones(layers, neurons))
        if learned:
            self.head_scores = nn.Parameter(torch.zeros(layers, heads))
            self.neuron_scores = nn.Parameter(torch.zeros(layers, neurons))
            for p in (self.head_scores, self.neuron_scores):
                p.lr_scale, p.no_decay = lr_scale, True
        self.sparsity = 0.0

    def masks(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.learned:
            return self.head_mask, self.neuron_mask
        return (TopKMask.apply(self.head_scores, self.sparsity), TopKMask.apply(self.neuron_scores, self.sparsity))

    @torch.no_grad()
    def final(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.learned:
            return self.head_mask.clone(), self.neuron_mask.clone()
        return (topk_keep(self.head_scores, self.sparsity).float(),
                topk_keep(self.neuron_scores, self.sparsity).float())


class MaskedEncoder(nn.Module):
    """The model under its unit masks: what the trainer fits. `hidden_states` asks the model for
    them (contrastive and distillation terms read them)."""

    def __init__(self, model: nn.Module, family, masks: UnitMasks, hidden_states: bool = False):
        super().__init__()
        self.model, self.masks = model, masks
        self.family, self.hidden_states = family, hidden_states

    def masked(self):
        if self.masks.learned and not self.masks.sparsity:
            return nullcontext()
        hm, nm = self.masks.masks()
        return masks_applied(self.model, self.family, hm, nm)

    def forward(self, **batch):
        if self.hidden_states:
            batch = {**batch, "output_hidden_states": True}
        with self.masked():
            return self.model(**batch)


class StructuredGradual(TrainedPruning):
    granularity = "N,H"
    physical = True
    learned = True           # topk over learned unit scores; False: `prune` sets fixed masks
    hidden_states = False

    def __init__(self, rate: Fraction = 0.75, start_frac: UnitInterval = 0.1, end_frac: UnitInterval = 0.7, interval: int = 10,
                 initial: float = 0.0, score_lr_scale: Positive = 100.0, seq_len: Count = 128, **kw: Any):
        super().__init__(**kw)
        if not 0 < rate < 1:
            raise ValueError(f"rate (the fraction of the encoder's weights removed) must lie in (0, 1), got {rate}")
        self.rate, self.start_frac, self.end_frac, self.interval, self.initial = rate, start_frac, end_frac, \
            interval, initial
        self.score_lr_scale, self.seq_len = score_lr_scale, seq_len
        self.history: list[dict[str, float]] = []

    def check_family(self, family, config=None) -> None:
        require_encoder(family, self.name)

    def prune(self, masks: UnitMasks, sparsity: float, step: int, inputs: TrainingInputs,
              wrapped: MaskedEncoder) -> None:
        """Fixed masks: set them for `sparsity` at a pruning step."""

    def extra_loss(self, wrapped: MaskedEncoder, inputs: TrainingInputs) -> Extra | None:
        return None

    def compress_trained(self, model: nn.Module, family, inputs: TrainingInputs, device: torch.device) -> nn.Module:
        layers, heads, neurons = unit_counts(model, family)
        masks = UnitMasks(layers, heads, neurons, self.learned, self.score_lr_scale)
        wrapped = MaskedEncoder(model, family, masks, self.hidden_states).to(device)
        flops_before, params_before = encoder_flops(model, family, self.seq_len), block_params(model, family)
        schedule = CubicSchedule.over(self.rate, self.total_steps(inputs), self.start_frac, self.end_frac,
                                      self.interval, self.initial)

        def sync(step: int) -> None:
            masks.sparsity = schedule.at(step)

        def on_step(step: int) -> None:
            sync(step)
            if schedule.prunes_at(step):
                self.prune(masks, masks.sparsity, step, inputs, wrapped)
                self.history.append({"step": step, "sparsity": masks.sparsity})

        on_step(0)
        inputs.fit(wrapped, self.loss(self.extra_loss(wrapped, inputs)), teacher=self.teacher(inputs),
                   on_step=on_step, on_resume=sync, evaluate=self.dev_score(inputs))
        hm, nm = masks.final()
        prune_with_masks(model, family, hm, nm)
        shapes = layer_shapes(model, family)
        self.facts.update(flops_before=flops_before, flops_after=encoder_flops(model, family, self.seq_len),
                          block_params_before=params_before, block_params_after=block_params(model, family),
                          heads_kept=[h for h, _ in shapes], neurons_kept=[n for _, n in shapes],
                          seq_len_for_flops=self.seq_len, pruning_steps=self.history)
        return model.eval()

    def result(self, before: ModelSize, after: ModelSize) -> CompressionResult:
        f = self.facts
        return CompressionResult(Kind.STRUCTURED, self.granularity, before, after, RateBasis.MEMORY,
                                 flops_before=f["flops_before"], flops_after=f["flops_after"],
                                 comp_rate=1 - f["block_params_after"] / f["block_params_before"],
                                 facts=self.summary())

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "rate_target": self.rate,
                "rate_counts": "fraction of the encoder blocks' weights removed (embeddings excluded)"}
