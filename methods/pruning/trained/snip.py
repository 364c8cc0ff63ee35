"""SNIP: pruning redundant mappings via a spectral-normalised identity prior (Lin et al. 2020) [97].
A residual unit whose mapping adds little to the identity path is redundant; with the spectral
norms of the output projections kept near 1, the relative norm of a unit's contribution is a
faithful redundancy measure:

    score(head h)   = E_tokens ‖ctx_h W_o[:, h]ᵀ‖ / ‖x‖        (x: the sub-layer's input, the identity path)
    score(neuron n) = E_tokens |a_n| ‖W_down[:, n]‖ / ‖x‖
    L = task + KD + μ Σ_{o, down} max(0, σ_max(W) − 1)²      (σ_max by power iteration)
    at each pruning step of the cubic schedule: the lowest-scoring heads and neurons are removed
    (the same fraction of each; pruned units stay pruned); physical removal at the end

Deviation: the paper normalises the weights by their spectral norm during fine-tuning; a
penalty keeps the short CPU fine-tune close to the fine-tuned model instead.
"""
from __future__ import annotations

from typing import Any

import torch

from methods.core.base import TrainingInputs, register
from methods.core.calibration import model_inputs
from methods.core.hooks import forward_hooks
from methods.pruning.encoder_units import head_dim
from methods.pruning.structure import struct_spec
from methods.pruning.trained.base import Extra
from methods.pruning.trained.structured import MaskedEncoder, StructuredGradual, UnitMasks
from methods.pruning.trained.weight_masks import topk_keep
from methods.core.settings import Count, Fraction


def spectral_norm(w: torch.Tensor, u: torch.Tensor, iters: int = 1) -> torch.Tensor:
    """σ_max(w) by power iteration from u (updated in place); differentiable in w."""
    with torch.no_grad():
        for _ in range(iters):
            v = torch.nn.functional.normalize(w.t() @ u, dim=0)
            u.copy_(torch.nn.functional.normalize(w @ v, dim=0))
    v = torch.nn.functional.normalize(w.t() @ u, dim=0).detach()
    return u @ w @ v


@register("snip")
class SNIP(StructuredGradual):
    smoke = ({"rate": 0.5, "interval": 2},)
    learned = False
    granularity = "N,H,S"

    def __init__(self, rate: Fraction = 0.75, spectral: float = 0.01, score_batches: Count = 4, preset: str = "snip",
                 label: str = "SNIP", ref: str = "97", **kw: Any):
        kw.setdefault("deviations", ["spectral-norm penalty instead of spectral normalisation of the weights"])
        super().__init__(rate=rate, preset=preset, label=label, ref=ref, **kw)
        self.spectral, self.score_batches = spectral, score_batches

    def extra_loss(self, wrapped: MaskedEncoder, inputs: TrainingInputs) -> Extra | None:
        if not self.spectral:
            return None
        spec = struct_spec(wrapped.family)
        mats = [dict(b.named_modules())[n].weight for b in wrapped.family.blocks(wrapped.model)
                for n in (spec.o, spec.mlp_down)]
        vecs = [torch.nn.functional.normalize(torch.randn(w.shape[0], device=w.device), dim=0) for w in mats]

        def term(s_out, t_out, batch):
            sig = torch.stack([spectral_norm(w, u) for w, u in zip(mats, vecs)])
            return self.spectral * torch.relu(sig - 1).pow(2).sum(), {"sigma_max": sig.max().detach()}
        return term

    @torch.no_grad()
    def unit_scores(self, wrapped: MaskedEncoder, batches) -> tuple[torch.Tensor, torch.Tensor]:
        model, family = wrapped.model, wrapped.family
        spec, hd = struct_spec(family), head_dim(model)
        blocks = family.blocks(model)
        heads = torch.zeros_like(wrapped.masks.head_mask)
        neurons = torch.zeros_like(wrapped.masks.neuron_mask)
        state: dict[str, Any] = {}
        pre = []
        for i, block in enumerate(blocks):
            m = dict(block.named_modules())
            wo, wd = m[spec.o].weight, m[spec.mlp_down].weight
            col_o = wo.view(wo.shape[0], -1, hd)                       # (d, H, hd)
            col_d = wd.norm(dim=0)                                      # (N,)

            def block_in(_m, a, i=i):
                state["x"] = a[0].norm(dim=-1).clamp_min(1e-6)          # (B, T)

            def head_in(_m, a, i=i, col_o=col_o):
                ctx = a[0].view(*a[0].shape[:2], -1, hd)               # (B, T, H, hd)
                contrib = torch.einsum("bthk,dhk->bthd", ctx, col_o).norm(dim=-1)
                heads[i] += (contrib / state["x"].unsqueeze(-1))[state["keep"]].mean(0)

            def neuron_in(_m, a, i=i, col_d=col_d):
                contrib = a[0].abs() * col_d
                neurons[i] += (contrib / state["x"].unsqueeze(-1))[state["keep"]].mean(0)
            pre += [(block, block_in), (m[spec.o], head_in), (m[spec.mlp_down], neuron_in)]
        was = wrapped.training
        wrapped.eval()
        with forward_hooks(pre=pre):
            for b in batches:
                dev = next(model.parameters()).device
                state["keep"] = b["attention_mask"].bool().to(dev)
                wrapped(**model_inputs(b, dev))
        wrapped.train(was)
        return heads, neurons

    def prune(self, masks: UnitMasks, sparsity: float, step: int, inputs: TrainingInputs,
              wrapped: MaskedEncoder) -> None:
        if sparsity <= 0:
            return
        data = inputs.data(0)
        batches = [data[(step + i) % len(data)] for i in range(self.score_batches)]
        heads, neurons = self.unit_scores(wrapped, batches)
        heads = heads.masked_fill(masks.head_mask == 0, -1.0)
        neurons = neurons.masked_fill(masks.neuron_mask == 0, -1.0)
        masks.head_mask.copy_(topk_keep(heads, sparsity).float())
        masks.neuron_mask.copy_(topk_keep(neurons, sparsity).float())
