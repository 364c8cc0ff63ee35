"""Kprune (Park et al., 2024), *Accurate Retraining-free Pruning for Pretrained Encoder-based
Language Models*: iterative knowledge-preserving pruning of heads and neurons under a FLOPs
constraint, one sub-layer at a time, with weight tuning after each step.

Algorithm (paper Alg. 1 / reference `kprune`), sub-layers s = MHA₀, FFN₀, MHA₁, … bottom to top:
  1. knowledge measurement on the current (partly pruned) model, for the units of s and above:
       predictive  K_pred = ½ (∂ KL(p_orig ‖ p_cur; T) / ∂m)²   per channel mask m, summed over batches
       representational  K_rep = Σ_tokens a_c² · mean_o W_out[o, c]²   (a: input of the output projection)
     heads average their channels; score = (λ_pred K_pred + λ_rep K_rep) / FLOPs of the unit,
     heads ×μ
  2. KPMS: rank the remaining units of s and above by score and keep the best prefix that fits the
     FLOPs still available; take only s's part of that mask
  3. KPWT: remove s's pruned units, then solve least squares for s's output projection so that
     the sub-layer's residual sum reconstructs the uncompressed model's one:
       min_W ‖A_kept W − (Y_orig − X_cur − b)‖²   (X_cur: the sub-layer's input in the current model)
  4. subtract the kept units' FLOPs from the budget and go to the next sub-layer
Defaults follow the reference run script: λ_pred 1, λ_rep 2.5e-4, μ 64, T 2, and knowledge is
measured over the reference's mini-batches (12 SQuAD / 32 GLUE samples: K_pred sums squared
gradients of mini-batch losses, so the grouping matters).

Compared with the reference code (snudm-starlab/K-prune) stage by stage on identical inputs
(scripts/reference/, results/minilm-l6/README.md): knowledge scores agree to 1e-7 (float32),
the masks are identical, the tuned projection agrees to 2e-5, and both whole runs keep the same
heads and neurons per layer (F1 50.49 here, 50.55 there). Declared deviations:
  - KPWT solves the normal equations with a 1e-6 relative damping in float64 (the reference:
    `torch.linalg.lstsq(AᵀA, AᵀB)` in float32): the 2e-5 above, and no failure on a singular AᵀA;
  - FLOPs are counted at `seq_len` 128 for every FLOPs-rate method of Table 2 so that their
    rates compare (the reference counts SQuAD at 170 tokens);
  - the calibration budget is the harness's `calib.nsamples` (128 features in the published
    rows; the reference samples 100,000 tokens, about 588 SQuAD features).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from methods.core.base import TableRow, register
from methods.core.calibration import InputBatches, model_inputs, rebatch
from methods.core.hooks import forward_hooks
from methods.core.outputs import task_logits
from methods.pruning.encoder_units import (EncoderPruning, encoder_flops, head_dim, layer_shapes,
                                           reference_batch_size, unit_flops)
from methods.pruning.structure import remove_units, struct_spec, units
from methods.core.settings import Count, Fraction, Positive
from methods.core.hessian import dampen


def soft_targets(model: nn.Module, batch: dict, device, T: float) -> list[torch.Tensor]:
    """The model's temperature-T predictions (QA: start and end distributions; else the classes)."""
    out = model(**model_inputs(batch, device))
    logits = task_logits(out)
    return [F.softmax(x.float() / T, -1).detach() for x in logits]


def distill_loss(model: nn.Module, batch: dict, targets: list[torch.Tensor], device, T: float) -> torch.Tensor:
    out = model(**model_inputs(batch, device))
    logits = task_logits(out)
    kls = [F.kl_div(F.log_softmax(x.float() / T, -1), t, reduction="batchmean") * T ** 2
           for x, t in zip(logits, targets)]
    return sum(kls) / len(kls)


@contextmanager
def channel_masks(model: nn.Module, family, masks: list[tuple[torch.Tensor, torch.Tensor]]):
    """Multiply the inputs of each layer's attention-output and FFN-output projections by
    per-channel masks (masks[i] = (head channels, neurons)), differentiable."""
    spec = struct_spec(family)
    pre = []
    for i, block in enumerate(family.blocks(model)):
        m = dict(block.named_modules())
        pre.append((m[spec.o], lambda _m, a, i=i: (a[0] * masks[i][0].to(a[0].dtype),)))
        pre.append((m[spec.mlp_down], lambda _m, a, i=i: (a[0] * masks[i][1].to(a[0].dtype),)))
    with forward_hooks(pre=pre):
        yield


def captured(modules: dict[str, nn.Module], store: dict[str, list], keep: list[torch.Tensor]):
    """Record each module's input at the non-padding tokens of the current batch."""
    def make(name):
        return lambda _m, a: store[name].append(a[0].detach()[keep[-1]].float())
    return forward_hooks(pre=[(mod, make(name)) for name, mod in modules.items()])


def sublayer_modules(block: nn.Module, spec, is_ffn: bool) -> tuple[str, str, str]:
    """(input linear, output projection, the LayerNorm that reads the residual sum)."""
    if is_ffn:
        return spec.mlp_up[0], spec.mlp_down, spec.mlp_down.rsplit(".", 1)[0] + ".LayerNorm"
    return spec.q, spec.o, spec.o.rsplit(".", 1)[0] + ".LayerNorm"


def keep_within_budget(scores: torch.Tensor, flops: torch.Tensor, budget: float) -> torch.Tensor:
    """KPMS: the best-scoring units whose FLOPs sum stays below the budget (a boolean mask)."""
    order = torch.argsort(scores, descending=True)
    fits = torch.cumsum(flops[order], 0) < budget
    keep = torch.zeros_like(scores, dtype=torch.bool)
    keep[order[fits.long().cumprod(0).bool()]] = True
    return keep


def reconstruct(features: torch.Tensor, target: torch.Tensor, damp: float = 1e-6) -> torch.Tensor:
    """KPWT: W (kept_in x out) minimising ‖features W − target‖² (normal equations, lightly damped)."""
    A = features.double()
    return torch.linalg.solve(dampen(A.t() @ A, damp), A.t() @ target.double()).float()


@register("kprune")
class Kprune(EncoderPruning):
    rows = {"table2": TableRow("Kprune", "112", "N,H")}

    def __init__(self, flops_rate: Fraction = 0.5, seq_len: Count = 128, lam_pred: float = 1.0, lam_rep: float = 2.5e-4,
                 mu: float = 64.0, temperature: Positive = 2.0, tune: bool = True, batch_size: Count | None = None):
        super().__init__(flops_rate, seq_len)
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"kprune: batch_size must be >= 1 (or null: the reference's), got {batch_size}")
        self.tune, self.lam_pred, self.lam_rep, self.mu, self.T = tune, lam_pred, lam_rep, mu, temperature
        self.batch_size = batch_size

    # ---- step 0: what the uncompressed model knows -------------------------------------------
    @torch.no_grad()
    def original_knowledge(self, model, family, batches, device) -> tuple[list, list[torch.Tensor]]:
        """Soft predictions per batch and, per sub-layer, its residual sums (LayerNorm inputs) at
        the non-padding tokens, concatenated over the batches (kept on the CPU)."""
        spec = struct_spec(family)
        norms = {}
        for i, block in enumerate(family.blocks(model)):
            m = dict(block.named_modules())
            for is_ffn in (False, True):
                norms[f"{2 * i + is_ffn}"] = m[sublayer_modules(block, spec, is_ffn)[2]]
        store: dict[str, list] = {k: [] for k in norms}
        keep: list[torch.Tensor] = []
        soft = []
        with captured(norms, store, keep):
            for batch in batches:
                keep.append(batch["attention_mask"].bool().to(device))
                soft.append(soft_targets(model, batch, device, self.T))
        return soft, [torch.cat(store[str(s)]).cpu() for s in range(len(norms))]

    # ---- step 1: knowledge measurement ---------------------------------------------------------
    def measure(self, model, family, batches, soft, device, target: int):
        """Scores of every unit of sub-layers >= target, the target's unit features and inputs."""
        spec, hd = struct_spec(family), head_dim(model)
        blocks = family.blocks(model)
        masks = []
        for block in blocks:
            m = dict(block.named_modules())
            masks.append((torch.ones(m[spec.o].in_features, device=device, requires_grad=True),
                          torch.ones(m[spec.mlp_down].in_features, device=device, requires_grad=True)))
        feats = {}
        for i, block in enumerate(blocks):
            m = dict(block.named_modules())
            for is_ffn in (False, True):
                if 2 * i + is_ffn >= target:
                    feats[f"{2 * i + is_ffn}"] = m[sublayer_modules(block, spec, is_ffn)[1]]
        t_block = blocks[target // 2]
        t_in = dict(t_block.named_modules())[sublayer_modules(t_block, spec, bool(target % 2))[0]]
        store: dict[str, list] = {k: [] for k in (*feats, "x")}
        keep: list[torch.Tensor] = []
        rep = {k: 0.0 for k in feats}
        pred = {k: 0.0 for k in feats}
        samples = tokens = 0
        with torch.enable_grad(), channel_masks(model, family, masks), \
                captured({**feats, "x": t_in}, store, keep):
            for batch, targets in zip(batches, soft):
                keep.append(batch["attention_mask"].bool().to(device))
                samples += batch["attention_mask"].shape[0]
                tokens += int(keep[-1].sum())
                loss = distill_loss(model, batch, targets, device, self.T)
                flat = [x for pair in masks for x in pair]
                grads = [torch.zeros_like(x) if g is None else g
                         for x, g in zip(flat, torch.autograd.grad(loss, flat, allow_unused=True))]
                for k, mod in feats.items():
                    s = int(k)
                    a = store[k].pop() if s != target else store[k][-1]
                    w2 = mod.weight.detach().float().pow(2).mean(0)
                    rep[k] = rep[k] + (a.pow(2).sum(0) * w2).cpu()
                    pred[k] = pred[k] + 0.5 * grads[s].detach().float().pow(2).cpu()
        head_f, neuron_f = unit_flops(model, self.seq_len)
        scores = {}
        for k in feats:
            s = int(k)
            r, p = rep[k] / max(tokens, 1), pred[k] / max(samples, 1)
            if s % 2 == 0:  # heads: mean over the head's channels
                r, p = r.view(-1, hd).mean(1), p.view(-1, hd).mean(1)
                scores[s] = self.mu * (self.lam_rep * r + self.lam_pred * p) / head_f
            else:
                scores[s] = (self.lam_rep * r + self.lam_pred * p) / neuron_f
        return scores, torch.cat(store[str(target)]).cpu(), torch.cat(store["x"]).cpu()

    # ---- steps 2-4 ------------------------------------------------------------------------------
    def compress_model(self, model: nn.Module, family, calib: InputBatches, device: torch.device,
                       batch_size: int = 8) -> nn.Module:
        batches = rebatch(calib.batches, self.batch_size or reference_batch_size(model))
        spec, hd = struct_spec(family), head_dim(model)
        model.to(device).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        full = encoder_flops(model, family, self.seq_len)
        budget = (1 - self.flops_rate) * full
        head_f, neuron_f = unit_flops(model, self.seq_len)
        soft, kd = self.original_knowledge(model, family, batches, device)
        blocks = family.blocks(model)
        for target in range(2 * len(blocks)):
            is_ffn, block = bool(target % 2), blocks[target // 2]
            scores, features, x_cur = self.measure(model, family, batches, soft, device, target)
            flops = {s: torch.full_like(v, neuron_f if s % 2 else head_f) for s, v in scores.items()}
            order = sorted(scores)
            keep_all = keep_within_budget(torch.cat([scores[s] for s in order]),
                                          torch.cat([flops[s] for s in order]), budget)
            keep = keep_all[: scores[target].numel()]
            drop = (~keep).nonzero().flatten().tolist()
            u = units(block, spec, hd)
            remove_units(block, spec, u, [] if is_ffn else drop, drop if is_ffn else [])
            out_proj = dict(block.named_modules())[sublayer_modules(block, spec, is_ffn)[1]]
            if self.tune and keep.any():
                cols = keep.repeat_interleave(1 if is_ffn else hd)
                y = kd[target] - x_cur - out_proj.bias.detach().float().cpu()
                W = reconstruct(features[:, cols], y)
                out_proj.weight.data.copy_(W.t().to(out_proj.weight.dtype))
            budget -= float(keep.sum()) * (neuron_f if is_ffn else head_f)
        shapes = layer_shapes(model, family)
        self.facts = {"flops_before": full, "flops_after": encoder_flops(model, family, self.seq_len),
                      "seq_len_for_flops": self.seq_len, "heads_kept": [h for h, _ in shapes], "neurons_kept": [n for _, n in shapes]}
        return model

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "lam_pred": self.lam_pred, "lam_rep": self.lam_rep, "mu": self.mu,
                "temperature": self.T, "tune": self.tune, "batch_size": self.batch_size}
