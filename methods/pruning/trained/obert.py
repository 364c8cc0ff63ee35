"""oBERT: the Optimal BERT Surgeon (Kurtic et al. 2022) [76], gradual, with block-wise Fisher
inverses; and gradual magnitude pruning (GMP), its baseline, on the same schedule.

At each pruning step of the cubic schedule (oBERT):
    g_1..g_G  gradients of the task loss on G mini-batches (the empirical Fisher's samples)
    per block b of B consecutive weights (row-major):  F_b = λI + (1/G) Σ_g g_b g_bᵀ
        (λ = damp × the mean diagonal of the matrix's empirical Fisher: the paper's absolute 1e-7
        is for 1024 gradients, where F_b has full rank; with the CPU preset's 16, F_b has rank 16)
    score  ρ_i = w_i² / (2 [F_b⁻¹]_ii)                      (the loss increase of removing w_i alone)
    prune the lowest scores over all encoder matrices (global), pruned weights stay pruned
    OBS update of the block, Q = its pruned weights:  δw = −F⁻¹[:, Q] (F⁻¹[Q, Q])⁻¹ w_Q
GMP: score |w|, global, no update. Both fine-tune with logit distillation between steps.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from methods.core.base import TrainingInputs, register
from methods.core.hessian import one_thread
from methods.core.calibration import to_device
from methods.pruning.trained.gradual import GradualUnstructured
from methods.pruning.trained.weight_masks import MaskedLinear, global_keep
from methods.core.settings import Count, Damp, Fraction


def fisher_inverse(grads: torch.Tensor, damp: float) -> torch.Tensor:
    """(n, B, B) inverses of F = damp·I + (1/G) Σ g gᵀ from (G, n, B) gradient blocks (float64).
    With fewer gradients than the block size, by Woodbury: F⁻¹ = (I − U (damp·I + UᵀU)⁻¹ Uᵀ)/damp,
    U = [g₁ … g_G]/√G (a G×G inverse per block instead of B×B)."""
    g = grads.double()
    G, n, B = g.shape
    U = g.permute(1, 2, 0) / G ** 0.5                                     # (n, B, G)
    with one_thread(g.device):
        if G < B:
            inner = U.transpose(1, 2) @ U
            inner.diagonal(dim1=-2, dim2=-1).add_(damp)
            eye = torch.eye(B, dtype=g.dtype, device=g.device)
            return (eye - U @ torch.linalg.solve(inner, U.transpose(1, 2))) / damp
        F = U @ U.transpose(1, 2)
        F.diagonal(dim1=-2, dim2=-1).add_(damp)
        return torch.linalg.inv(F)


def fisher_inverse_diag(grads: torch.Tensor, damp: float) -> torch.Tensor:
    """(n, B): the diagonal of each block's F⁻¹ (the scores need no more), without forming F⁻¹
    when Woodbury applies: diag = (1 − Σ_g U_ig [(damp·I + UᵀU)⁻¹ Uᵀ]_gi) / damp."""
    g = grads.double()
    G, n, B = g.shape
    if G >= B:
        return fisher_inverse(grads, damp).diagonal(dim1=-2, dim2=-1)
    U = g.permute(1, 2, 0) / G ** 0.5
    with one_thread(g.device):
        inner = U.transpose(1, 2) @ U
        inner.diagonal(dim1=-2, dim2=-1).add_(damp)
        X = torch.linalg.solve(inner, U.transpose(1, 2))                      # (n, G, B)
    return (1 - (U * X.transpose(1, 2)).sum(-1)) / damp


def obs_update(w: torch.Tensor, finv: torch.Tensor, prune: torch.Tensor) -> torch.Tensor:
    """The OBS-updated blocks (n, B) after removing the weights `prune` (n, B) of each block:
    w − F⁻¹[:, Q] (F⁻¹[Q, Q])⁻¹ w_Q, computed for all blocks at once (the entries outside Q are
    replaced by the identity in the solve, so each block's Q may differ); w_Q ends at exactly 0."""
    q = prune.to(finv.dtype)
    m = finv * q.unsqueeze(-1) * q.unsqueeze(-2) + torch.diag_embed(1 - q)
    with one_thread(finv.device):
        x = torch.linalg.solve(m, (w.to(finv.dtype) * q).unsqueeze(-1)).squeeze(-1) * q
    out = w.to(finv.dtype) - (finv @ x.unsqueeze(-1)).squeeze(-1)
    return out.masked_fill(prune, 0).to(w.dtype)


def blocks_of(t: torch.Tensor, size: int) -> torch.Tensor:
    """The flattened tensor in blocks of `size` (zero-padded at the end): (n, size)."""
    flat = t.flatten()
    pad = (-flat.numel()) % size
    return torch.cat([flat, flat.new_zeros(pad)]).view(-1, size)


@register("obert")
class OBERT(GradualUnstructured):
    smoke = ({"rate": 0.8, "fisher_batches": 2, "block_size": 16, "interval": 2}, {"rate": 0.8, "score": "magnitude", "interval": 2},)
    def __init__(self, rate: Fraction = 0.9, score: str = "obs", fisher_batches: Count = 16, block_size: Count = 50,
                 damp: Damp = 1e-2, chunk: int = 4096, preset: str = "obert", label: str = "oBERT", ref: str = "76",
                 **kw: Any):
        super().__init__(rate=rate, preset=preset, label=label, ref=ref, **kw)
        if score not in ("obs", "magnitude"):
            raise ValueError(f"oBERT score must be 'obs' (oBERT) or 'magnitude' (GMP), got '{score}'")
        self.score, self.fisher_batches, self.block_size = score, fisher_batches, block_size
        self.damp, self.chunk = damp, chunk

    def gradients(self, masked: dict[str, MaskedLinear], inputs: TrainingInputs, model: nn.Module,
                  step: int) -> dict[str, torch.Tensor]:
        """(G, n, B) blocks of G mini-batch gradients of the task loss, per matrix."""
        data = inputs.data(0)
        device = next(model.parameters()).device
        grads: dict[str, list[torch.Tensor]] = {k: [] for k in masked}
        was_training = model.training
        model.train()
        for i in range(self.fisher_batches):
            batch = to_device(data[(step + i) % len(data)], device)
            model.zero_grad(set_to_none=True)
            model(**batch).loss.backward()
            for k, m in masked.items():
                grads[k].append(blocks_of(m.weight.grad.detach(), self.block_size))
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        return {k: torch.stack(v) for k, v in grads.items()}

    @torch.no_grad()
    def prune(self, masked: dict[str, MaskedLinear], sparsity: float, step: int, inputs: TrainingInputs,
              model: nn.Module) -> None:
        if self.score == "magnitude":
            keep = global_keep({k: m.weight.abs() * m.mask for k, m in masked.items()}, sparsity)
            for k, m in masked.items():
                m.mask &= keep[k]
                m.weight.mul_(m.mask)
            return
        with torch.enable_grad():
            grads = self.gradients(masked, inputs, model, step)
        finv_diag, scores, lam = {}, {}, {}
        for k, m in masked.items():
            w = blocks_of(m.weight, self.block_size)
            mean_diag = float(grads[k].double().pow(2).mean(0).mean())  # λ relative to the mean diagonal of F
            lam[k] = self.damp * mean_diag if mean_diag > 0 else self.damp
            diag = torch.cat([fisher_inverse_diag(grads[k][:, i:i + self.chunk], lam[k])
                              for i in range(0, w.shape[0], self.chunk)])
            score = (w.double() ** 2 / (2 * diag)).float()
            score = score.flatten()[: m.weight.numel()].view_as(m.weight)
            scores[k] = score.masked_fill(~m.mask, -1.0)  # pruned weights stay pruned (lowest scores)
            finv_diag[k] = diag
        keep = global_keep(scores, sparsity)
        for k, m in masked.items():
            m.mask &= keep[k]
            w = blocks_of(m.weight, self.block_size)
            prune = blocks_of(~m.mask, self.block_size)
            prune[-1, (m.weight.numel() % self.block_size or self.block_size):] = False  # padding
            new = torch.cat([obs_update(w[i:i + self.chunk], fisher_inverse(grads[k][:, i:i + self.chunk], lam[k]),
                                        prune[i:i + self.chunk]) for i in range(0, w.shape[0], self.chunk)])
            m.weight.copy_(new.flatten()[: m.weight.numel()].view_as(m.weight))
            m.weight.mul_(m.mask)

    def summary(self) -> dict[str, Any]:
        out = {**super().summary(), "score": self.score}
        if self.score == "obs":
            out.update(fisher_batches=self.fisher_batches, block_size=self.block_size, damp=self.damp)
        return out
