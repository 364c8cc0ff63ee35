"""Kwon et al. (2022), *A Fast Post-Training Pruning Framework for Transformers*: retraining-free
head/neuron pruning of an encoder under a FLOPs constraint, from a few thousand task samples.

Algorithm (paper §4; the reference code WoosukKwon/retraining-free-pruning):
  1. Fisher information of the mask variables (all 1). `fisher="batch"` (default, the
     reference's `collect_mask_grads`): one gradient of the mini-batch loss per mini-batch of
     `fisher_batch_size` samples (12 for SQuAD, 32 for GLUE, as the reference), I_ii = Σ_b g_bi².
     `fisher="sample"`: per-sample gradients (compbench's earlier variant).
  2. mask search (Alg. 1): heads and neurons ranked by I_ii; for every number of kept heads,
     fill the rest of the FLOPs budget with the most important neurons; keep the split with the
     largest total importance
  3. mask rearrangement, per layer with the layer's counts fixed. `rearrange="greedy"` (default,
     the reference's `greedy_rearrange`): start from the least important units as the pruned
     set; add each further unit in ascending importance and drop from the set the unit whose
     removal leaves the smallest ‖Σ_{pruned} g‖² (the block-diagonal Fisher loss).
     `rearrange="swap"`: pairwise swaps while ½(1−m)ᵀF(1−m) decreases (compbench's variant:
     a lower objective, a worse model in the comparison of results/minilm-l6/README.md).
  4. mask tuning. `tune="reference"`: as `prune/rescale.py` (methods/pruning/mask_tuning.py):
     against a teacher mask searched at √c of the budget, on the pruned model's propagated
     inputs, with a bias column, layer-0 heads untouched, a damped direct solve in float64 and
     failures reported. `tune="dense"`: per layer, least squares for the kept units' scales
     against the dense model's own outputs on its own (dense) inputs (normal equations with the
     Gram matrices of the per-unit contributions). `tune="none"`: binary masks.
  5. fold the masks into the output projections and remove the pruned structures physically
Published rows (results/minilm-l6, 50% and 75% of FLOPs): the defaults, fisher=batch,
rearrange=greedy, tune=reference; that README's Kwon section compares every variant.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from methods.core.base import TableRow, register
from methods.core.calibration import InputBatches, model_inputs, rebatch, to_device
from methods.core.hooks import forward_hooks
from methods.pruning.encoder_units import (EncoderPruning, encoder_flops, head_dim, masks_applied, prune_with_masks,
                                           reference_batch_size, unit_flops)
from methods.pruning.mask_tuning import tune_like_reference
from methods.pruning.structure import struct_spec
from methods.core.settings import Count, Fraction


def per_sample_mask_gradients(model, family, batches, L: int, H: int, N: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(samples, L, H) and (samples, L, N) gradients of each sample's loss w.r.t. the masks."""
    gh, gn = [], []
    model.to(device).eval()
    with torch.enable_grad():
        for batch in batches:
            b = next(iter(batch.values())).shape[0]
            hm = torch.ones(b, L, H, device=device, requires_grad=True)
            nm = torch.ones(b, L, N, device=device, requires_grad=True)
            with masks_applied(model, family, hm, nm):
                loss = model(**to_device(batch, device)).loss
            dh, dn = torch.autograd.grad(loss * b, (hm, nm))  # mean loss x b: each row is one sample's gradient
            gh.append(dh.detach().cpu())
            gn.append(dn.detach().cpu())
    return torch.cat(gh), torch.cat(gn)


def minibatch_mask_gradients(model, family, batches, L: int, H: int, N: int, device,
                             batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mini-batches, L, H) and (mini-batches, L, N): the gradient of each mini-batch's mean loss
    w.r.t. masks shared by its samples (the reference's Fisher samples)."""
    gh, gn = [], []
    model.to(device).eval()
    with torch.enable_grad():
        for batch in rebatch(batches, batch_size):
            hm = torch.ones(L, H, device=device, requires_grad=True)
            nm = torch.ones(L, N, device=device, requires_grad=True)
            with masks_applied(model, family, hm, nm):
                loss = model(**to_device(batch, device)).loss
            dh, dn = torch.autograd.grad(loss, (hm, nm))
            gh.append(dh.detach().cpu())
            gn.append(dn.detach().cpu())
    return torch.stack(gh), torch.stack(gn)


def greedy_rearrange(mask: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """One layer, the reference's greedy procedure: `grads` (mini-batches x units); the number of
    pruned units stays; returns the new binary mask (1 = kept)."""
    n_pruned = int((mask == 0).sum())
    if n_pruned in (0, mask.numel()):
        return mask.clone()
    vectors = grads.t().double()                                   # units x mini-batches
    order = torch.argsort(vectors.pow(2).sum(1), stable=True).tolist()
    pruned = order[:n_pruned]
    for unit in order[n_pruned:]:
        pruned.append(unit)
        v = vectors[pruned]
        leave_one_out = (v.sum(0, keepdim=True) - v).pow(2).sum(1)  # the loss if that unit were kept
        del pruned[int(torch.argmin(leave_one_out))]
    out = torch.ones_like(mask)
    out[pruned] = 0
    return out


def search_masks(head_imp: torch.Tensor, neuron_imp: torch.Tensor, head_flops: float, neuron_flops: float,
                 budget: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Alg. 1: binary masks (L, H), (L, N) of the largest total importance within the FLOPs budget."""
    h_order = torch.argsort(head_imp.flatten(), descending=True)
    n_order = torch.argsort(neuron_imp.flatten(), descending=True)
    h_cum = torch.cat([torch.zeros(1), torch.cumsum(head_imp.flatten()[h_order], 0)])
    n_cum = torch.cat([torch.zeros(1), torch.cumsum(neuron_imp.flatten()[n_order], 0)])
    best, best_split = -1.0, (0, 0)
    for n_h in range(h_order.numel() + 1):
        left = budget - n_h * head_flops
        if left < 0:
            break
        n_n = min(n_order.numel(), int(left // neuron_flops))
        score = float(h_cum[n_h] + n_cum[n_n])
        if score > best:
            best, best_split = score, (n_h, n_n)
    hm = torch.zeros(head_imp.numel())
    nm = torch.zeros(neuron_imp.numel())
    hm[h_order[: best_split[0]]] = 1
    nm[n_order[: best_split[1]]] = 1
    return hm.view_as(head_imp), nm.view_as(neuron_imp)


def rearrange(mask: torch.Tensor, grads: torch.Tensor, sweeps: int = 3) -> torch.Tensor:
    """One layer: keep the number of ones, swap units while ½ (1−m)ᵀ F (1−m) decreases,
    F = mean over samples of g gᵀ (grads: samples x units)."""
    F = grads.t() @ grads / grads.shape[0]
    m = mask.clone()
    if m.sum() in (0, m.numel()):
        return m
    for _ in range(sweeps):
        improved = False
        r = 1 - m                    # pruned indicator
        Fr = F @ r
        for p in (m == 0).nonzero().flatten().tolist():       # a pruned unit to restore
            # restoring p and pruning k changes r by -e_p + e_k: Δ = F_kk + F_pp - 2F_pk + 2(Fr)_k - 2(Fr)_p
            kept = (m == 1).nonzero().flatten()
            delta = F[kept, kept] + F[p, p] - 2 * F[p, kept] + 2 * Fr[kept] - 2 * Fr[p]
            j = int(torch.argmin(delta))
            if float(delta[j]) < -1e-12:
                k = int(kept[j])
                m[p], m[k] = 1.0, 0.0
                Fr += F[:, k] - F[:, p]
                improved = True
        if not improved:
            break
    return m


def least_squares_mask(contrib_gram: torch.Tensor, contrib_target: torch.Tensor, mask: torch.Tensor,
                       damp: float = 1e-6, bound: float = 10.0) -> torch.Tensor:
    """Kept units' mask values minimising ‖Σ_u m_u A_u − y‖² given G = [⟨A_u, A_v⟩] and b = [⟨A_u, y⟩]."""
    kept = (mask > 0).nonzero().flatten()
    out = torch.zeros_like(mask)
    if kept.numel() == 0:
        return out
    G = contrib_gram[kept][:, kept].double()
    G += damp * G.diagonal().mean() * torch.eye(kept.numel(), dtype=G.dtype)
    out[kept] = torch.linalg.solve(G, contrib_target[kept].double()).clamp(-bound, bound).float()
    return out


@torch.no_grad()
def layer_contributions(model, family, batches, device) -> list[dict[str, torch.Tensor]]:
    """Per layer, the Gram matrices and targets of the head and neuron contributions to the
    attention-output and FFN-output projections (before bias), over the calibration tokens."""
    spec, hd = struct_spec(family), head_dim(model)
    stats: list[dict[str, torch.Tensor]] = []
    feeds: dict[int, dict[str, list]] = {}
    pre = []
    for i, block in enumerate(family.blocks(model)):
        m = dict(block.named_modules())
        feeds[i] = {"ctx": [], "act": [], "mask": []}
        pre.append((m[spec.o], lambda _m, a, i=i: feeds[i]["ctx"].append(a[0])))
        pre.append((m[spec.mlp_down], lambda _m, a, i=i: feeds[i]["act"].append(a[0])))
    with forward_hooks(pre=pre):
        for batch in batches:
            model(**model_inputs(batch, device))
            for i in feeds:
                feeds[i]["mask"].append(batch["attention_mask"].bool())
    for i, block in enumerate(family.blocks(model)):
        m = dict(block.named_modules())
        tok = torch.cat([mk.flatten() for mk in feeds[i]["mask"]])
        ctx = torch.cat([c.reshape(-1, c.shape[-1]) for c in feeds[i]["ctx"]])[tok].float()
        act = torch.cat([a.reshape(-1, a.shape[-1]) for a in feeds[i]["act"]])[tok].float()
        Wo, Wd = m[spec.o].weight.float(), m[spec.mlp_down].weight.float()
        H = ctx.shape[1] // hd
        A = torch.einsum("thd,ohd->tho", ctx.view(-1, H, hd), Wo.view(Wo.shape[0], H, hd))  # per-head output
        y_att = A.sum(1)
        # neurons: <A_n, A_n'> = (actᵀact)_nn' (W_nᵀW_n'), <A_n, y> = Σ_t act_tn (yW)_tn
        y_ffn = act @ Wd.t()
        stats.append({"head_gram": torch.einsum("tho,tgo->hg", A, A), "head_target": torch.einsum("tho,to->h", A, y_att),
                      "neuron_gram": (act.t() @ act) * (Wd.t() @ Wd), "neuron_target": (act * (y_ffn @ Wd)).sum(0)})
    return stats


@register("kwon")
class Kwon(EncoderPruning):
    rows = {"table2": TableRow("Kwon et al.", "81", "N,H")}
    FISHER, REARRANGE, TUNE = ("batch", "sample"), ("greedy", "swap", "none"), ("reference", "dense", "none")

    def __init__(self, flops_rate: Fraction = 0.5, seq_len: Count = 128, fisher: str = "batch",
                 fisher_batch_size: Count | None = None, rearrange: str = "greedy", tune: str = "reference",
                 on_failure: str = "stop"):
        super().__init__(flops_rate, seq_len)
        for name, value, allowed in (("fisher", fisher, self.FISHER), ("rearrange", rearrange, self.REARRANGE),
                                     ("tune", tune, self.TUNE), ("on_failure", on_failure, ("stop", "skip"))):
            if value not in allowed:
                raise ValueError(f"kwon: {name}={value!r} is not one of {', '.join(allowed)}")
        if fisher_batch_size is not None and fisher_batch_size < 1:
            raise ValueError(f"kwon: fisher_batch_size must be >= 1 (or null), got {fisher_batch_size}")
        self.fisher, self.fisher_batch_size, self.rearrange = fisher, fisher_batch_size, rearrange
        self.tune, self.on_failure = tune, on_failure

    def compress_model(self, model: nn.Module, family, calib: InputBatches, device: torch.device,
                       batch_size: int = 8) -> nn.Module:
        batches = calib.batches
        cfg = model.config
        L, H, N = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size
        S = self.seq_len
        head_flops, neuron_flops = unit_flops(model, S)
        full = encoder_flops(model, family, S)
        if self.fisher == "batch":
            fb = self.fisher_batch_size or reference_batch_size(model)
            gh, gn = minibatch_mask_gradients(model, family, batches, L, H, N, device, fb)
        else:
            gh, gn = per_sample_mask_gradients(model, family, batches, L, H, N, device)
        budget = (1 - self.flops_rate) * full
        hm, nm = search_masks(gh.pow(2).sum(0), gn.pow(2).sum(0), head_flops, neuron_flops, budget)
        if self.rearrange == "greedy":
            hm = torch.stack([greedy_rearrange(hm[i], gh[:, i]) for i in range(L)])
            nm = torch.stack([greedy_rearrange(nm[i], gn[:, i]) for i in range(L)])
        elif self.rearrange == "swap":
            hm = torch.stack([rearrange(hm[i], gh[:, i]) for i in range(L)])
            nm = torch.stack([rearrange(nm[i], gn[:, i]) for i in range(L)])
        binary = (hm.clone(), nm.clone())
        tuning: dict[str, Any] = {}
        if self.tune == "reference":
            teacher = search_masks(gh.pow(2).sum(0), gn.pow(2).sum(0), head_flops, neuron_flops,
                                   math.sqrt(1 - self.flops_rate) * full)
            hm, nm, tuning = tune_like_reference(model, family, batches, device, teacher, (hm, nm), self.on_failure)
        elif self.tune == "dense":
            stats = layer_contributions(model, family, batches, device)
            hm = torch.stack([least_squares_mask(s["head_gram"], s["head_target"], hm[i]) for i, s in enumerate(stats)])
            nm = torch.stack([least_squares_mask(s["neuron_gram"], s["neuron_target"], nm[i])
                              for i, s in enumerate(stats)])
        prune_with_masks(model, family, hm, nm)
        self.facts = {"flops_before": full, "flops_after": encoder_flops(model, family, S), "seq_len_for_flops": S,
                      "heads_kept": binary[0].sum(1).int().tolist(), "neurons_kept": binary[1].sum(1).int().tolist(),
                      "fisher_samples": int(gh.shape[0]), **({"tuning": tuning} if tuning else {})}
        return model

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "fisher": self.fisher, "rearrange": self.rearrange, "tune": self.tune}
