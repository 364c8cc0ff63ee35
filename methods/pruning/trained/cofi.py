"""CoFi (Xia et al. 2022) [155]: coarse- and fine-grained L0 masks, pruned toward a target
sparsity under a Lagrangian constraint, with layer-wise distillation; and SIMPLE (Tao et al.
2023) [134], the same learned structured masks (heads, neurons, hidden dimensions) for a
generative decoder with distillation.

    gates z (methods/pruning/trained/gates.py): heads, attention layers, neurons, FFN layers, hidden dims
    ŝ = 1 − E[parameters kept] / parameters          (blocks; SIMPLE: embeddings included)
    L = task + KD(logits) + α_layer · L_layer + λ₁(ŝ − t_k) + λ₂(ŝ − t_k)²,  t_k: 0 → t over the warm-up
    L_layer = Σ_{teacher layer i ∈ every other} MSE(W·h_s^{m(i)}, h_t^i),
              m(i) = the student layer ≥ m(i − 1) closest to teacher layer i (chosen per batch)
    end: deterministic gates folded in, zero-gated structures removed (a smaller model)

Deviation (`reach_target`, on by default): the papers train for thousands of steps, in which the
Lagrangian brings the expected sparsity to the target; a short CPU budget falls short of it, so
at the end of the target's warm-up the gate logits are lowered by one constant δ (the smallest
that reaches the target, keeping the learned order of the structures), the rest of the run
recovers under the Lagrangian, and at the end any remaining gap is closed the same way. The
record keeps the sparsities before the shifts.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from methods.core.base import CompressionResult, Kind, RateBasis, TrainingInputs, register
from methods.core.model_facts import ModelSize
from methods.core.hard_concrete import lagrangian
from methods.pruning.encoder_units import encoder_flops
from methods.pruning.trained.base import TrainedPruning
from methods.pruning.trained.cap import HiddenStates
from methods.pruning.trained.gates import StructureGates, gated_families
from methods.pruning.trained.structured import block_params
from methods.core.settings import Count, Fraction, Positive, UnitInterval


class GatedModel(nn.Module):
    def __init__(self, model: nn.Module, gates: StructureGates, hidden_states: bool, width: int,
                 lam_lr_scale: Positive):
        super().__init__()
        self.model, self.gates, self.hidden_states = model, gates, hidden_states
        self.lam = nn.Parameter(torch.zeros(2))
        self.lam.lr_scale, self.lam.no_decay = lam_lr_scale, True
        self.proj = nn.Linear(width, width)
        with torch.no_grad():
            self.proj.weight.copy_(torch.eye(width))
            self.proj.bias.zero_()

    def masked(self):
        return self.gates.applied(self.model, self.gates.sample())

    def forward(self, **batch):
        if self.hidden_states:
            batch = {**batch, "output_hidden_states": True}
        with self.masked():
            return self.model(**batch)


def layer_distill(proj: nn.Linear, student: tuple[torch.Tensor, ...],
                  teacher: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """CoFi's layer distillation: every other teacher layer to its closest later student layer."""
    layers = len(teacher) - 1
    loss, prev = 0.0, 1
    for i in range(2, layers + 1, 2):
        t = teacher[i].float()
        with torch.no_grad():
            errs = [F.mse_loss(proj(student[j].float()), t) for j in range(prev, layers + 1)]
        j = prev + int(torch.stack(errs).argmin())
        loss = loss + F.mse_loss(proj(student[j].float()), t)
        prev = j
    return loss


@register("cofi")
class CoFi(TrainedPruning):
    smoke = ({"rate": 0.5},)
    physical = True
    roles = ("encoder", "decoder")

    def __init__(self, rate: Fraction = 0.75, hidden: bool = True, layers: bool = True, layer_distill: float = 1.0,
                 warmup_frac: UnitInterval = 0.5, gate_lr_scale: Positive = 1000.0, lambda_lr_scale: Positive = 1000.0,
                 count_embeddings: bool = False, rate_basis: str = "flops", seq_len: Count = 128,
                 reach_target: bool = True,
                 preset: str = "cofi", label: str = "CoFi", ref: str = "155", tables: tuple[str, ...] = ("table2",),
                 **kw: Any):
        super().__init__(preset=preset, label=label, ref=ref, tables=tables, **kw)
        if not 0 < rate < 1:
            raise ValueError(f"rate (the target sparsity) must lie in (0, 1), got {rate}")
        if rate_basis not in ("flops", "memory"):
            raise ValueError(f"rate_basis must be 'flops' or 'memory', got '{rate_basis}'")
        self.rate, self.hidden, self.layers, self.layer_weight = rate, hidden, layers, layer_distill
        self.warmup_frac, self.gate_lr_scale, self.lambda_lr_scale = warmup_frac, gate_lr_scale, lambda_lr_scale
        self.count_embeddings, self.rate_basis, self.seq_len = count_embeddings, rate_basis, seq_len
        self.reach_target = reach_target
        if reach_target:
            self.deviations.append("at the end of the target warm-up (and at the end) every gate logit is lowered by "
                                   "one constant until the expected sparsity is the target (order kept)")
        self.granularity = ("E," if hidden else "") + "N,H" + (",S" if layers else "")

    def check_family(self, family, config=None) -> None:
        if family.embedding_norm is None:
            raise ValueError(f"method '{self.name}' gates {', '.join(gated_families())} blocks, not '{family.name}'")

    def teacher(self, inputs: TrainingInputs) -> nn.Module | None:
        if inputs.teacher is None:
            return None
        return HiddenStates(inputs.teacher) if self.layer_weight else inputs.teacher

    def compress_trained(self, model: nn.Module, family, inputs: TrainingInputs, device: torch.device) -> nn.Module:
        gates = StructureGates(model, family, hidden=self.hidden, layers=self.layers, lr_scale=self.gate_lr_scale)
        wrapped = GatedModel(model, gates, self.layer_weight > 0, model.config.hidden_size,
                             self.lambda_lr_scale).to(device)
        encoder = family.role == "encoder"
        flops_before = encoder_flops(model, family, self.seq_len) if encoder else None
        params_before = block_params(model, family)
        dense = gates.dense_params(self.count_embeddings)
        warm = max(1, int(self.warmup_frac * self.total_steps(inputs)))
        clock = {"step": 0}

        def expected_sparsity() -> torch.Tensor:
            return 1 - gates.expected_params(self.count_embeddings) / dense

        def extra(s_out, t_out, batch):
            target = self.rate * min(1.0, clock["step"] / warm)
            s = expected_sparsity()
            loss = lagrangian(wrapped.lam, s - target)
            parts = {"sparsity": s.detach(), "target": torch.tensor(target)}
            if self.layer_weight and t_out is not None:
                ld = layer_distill(wrapped.proj, s_out.hidden_states, t_out.hidden_states)
                loss, parts["layer"] = loss + self.layer_weight * ld, ld.detach()
            return loss, parts

        def on_step(step: int) -> None:
            clock.update(step=step)
            if self.reach_target and step == warm:  # the rest of the run recovers from the shift
                self.facts["expected_sparsity_at_warmup_end"] = float(expected_sparsity().detach())
                self.facts["gate_logit_shift"] = gates.shift_to(self.rate, self.count_embeddings)
                with torch.no_grad():  # the constraint holds now: multipliers grown while it did not would overshoot
                    wrapped.lam.zero_()

        inputs.fit(wrapped, self.loss(extra), teacher=self.teacher(inputs), on_step=on_step,
                   on_resume=lambda step: clock.update(step=step), evaluate=self.dev_score(inputs))
        self.facts["expected_sparsity_at_end"] = float(expected_sparsity().detach())
        if self.reach_target:
            self.facts["gate_logit_shift_at_end"] = gates.shift_to(self.rate, self.count_embeddings)
            self.facts["expected_sparsity_after_shift"] = float(expected_sparsity().detach())
        self.facts.update(gates.make_physical(model))
        self.facts.update(block_params_before=params_before, block_params_after=block_params(model, family),
                          sparsity_counts="blocks and embeddings" if self.count_embeddings else "blocks")
        if encoder:
            self.facts.update(flops_before=flops_before, flops_after=encoder_flops(model, family, self.seq_len),
                              seq_len_for_flops=self.seq_len)
        return model.eval()

    def result(self, before: ModelSize, after: ModelSize) -> CompressionResult:
        f = self.facts
        if self.rate_basis == "flops" and "flops_before" in f:
            return CompressionResult(Kind.STRUCTURED, self.granularity, before, after, RateBasis.FLOPS,
                                     flops_before=f["flops_before"], flops_after=f["flops_after"],
                                     facts=self.summary())
        comp = None if self.count_embeddings else 1 - f["block_params_after"] / f["block_params_before"]
        return CompressionResult(Kind.STRUCTURED, self.granularity, before, after, RateBasis.MEMORY, comp_rate=comp,
                                 facts=self.summary())

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "rate_target": self.rate, "layer_distill": self.layer_weight}


@register("simple")
class SIMPLE(CoFi):
    """SIMPLE's defaults: a decoder, no layer gates, the rate counted with the token embeddings."""
    smoke = ({"rate": 0.5},)

    def __init__(self, rate: Fraction = 0.485, layers: bool = False, count_embeddings: bool = True,
                 rate_basis: str = "memory", preset: str = "simple", label: str = "SIMPLE", ref: str = "134",
                 tables: tuple[str, ...] = ("table3",), **kw: Any):
        super().__init__(rate=rate, layers=layers, count_embeddings=count_embeddings, rate_basis=rate_basis,
                         preset=preset, label=label, ref=ref, tables=tables, **kw)
