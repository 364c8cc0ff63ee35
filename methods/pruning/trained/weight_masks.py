"""Weight masks that the trainer updates while it fine-tunes (unstructured pruning).

`MaskedLinear` computes y = x (W ⊙ M)ᵀ + b, with M given by its `mode`:

  fixed      a boolean buffer, set at pruning steps (gradual magnitude, oBERT, hard movement)
  topk       M = TopK(S, sparsity) of learned scores S, straight-through to S (movement pruning)
  threshold  M = 1[S > τ] forward, σ((S − τ)/T) backward, τ learned per matrix (LEAP)

With `track_movement`, the hard-movement score −Σ_t W ⊙ ∂L/∂W′ is accumulated in `movement`
(W′ = W ⊙ M, the weight the forward used), one term per backward pass.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from methods.core.wrapped_linears import LinearWrapper, unwrap_block_linears, wrap_block_linears
from methods.core.settings import Positive


class TopKMask(torch.autograd.Function):
    """Keep the (1 − sparsity) fraction of largest scores of the matrix; the gradient passes
    straight through to every score (Sanh et al.'s TopK binariser)."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, sparsity: float) -> torch.Tensor:
        return topk_keep(scores, sparsity).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


@torch.no_grad()
def topk_keep(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Boolean keep-mask of the numel − int(numel·sparsity) largest scores (ties: lower index
    first). A selection (kthvalue), not a sort: it runs in every masked forward."""
    flat = scores.detach().flatten()
    n = flat.numel()
    k = n - int(n * sparsity)
    if k >= n:
        return torch.ones_like(scores, dtype=torch.bool)
    if k <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    kth = torch.kthvalue(flat, n - k + 1).values
    keep = flat > kth
    need = k - int(keep.sum())
    if need > 0:  # ties at the threshold: the lowest indices
        keep[(flat == kth).nonzero().flatten()[:need]] = True
    return keep.view_as(scores)


def global_keep(scores: dict[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """Keep-masks of the largest scores over all matrices together (one global threshold)."""
    flat = torch.cat([s.flatten().float() for s in scores.values()])
    k = flat.numel() - int(flat.numel() * sparsity)
    keep = torch.zeros_like(flat, dtype=torch.bool)
    if k:
        keep[torch.topk(flat, k, sorted=False)[1]] = True
    out, pos = {}, 0
    for name, s in scores.items():
        out[name] = keep[pos:pos + s.numel()].view_as(s)
        pos += s.numel()
    return out


class MaskedLinear(LinearWrapper):
    def __init__(self, linear: nn.Linear, mode: str = "fixed", score_init: float | None = None,
                 score_lr_scale: Positive = 1.0, track_movement: bool = False, temperature: Positive = 1.0):
        super().__init__(linear)
        if mode not in ("fixed", "topk", "threshold"):
            raise ValueError(f"mask mode '{mode}' is not fixed, topk or threshold")
        self.mode, self.track_movement = mode, track_movement
        w = linear.weight
        self.register_buffer("mask", torch.ones_like(w, dtype=torch.bool))
        self.register_buffer("movement", torch.zeros_like(w) if track_movement else None)
        self.scores = None
        if mode != "fixed":
            init = torch.full_like(w, score_init) if score_init is not None else w.detach().abs().clone()
            self.scores = nn.Parameter(init)
            self.scores.lr_scale, self.scores.no_decay = score_lr_scale, True
        self.threshold = None
        if mode == "threshold":
            self.threshold = nn.Parameter(torch.zeros(()))
            self.threshold.lr_scale, self.threshold.no_decay = score_lr_scale, True
        self.sparsity = 0.0          # topk: the schedule's current target
        self.temperature = temperature

    def current_mask(self) -> torch.Tensor:
        if self.mode == "topk":
            return TopKMask.apply(self.scores, self.sparsity)
        if self.mode == "threshold":
            soft = torch.sigmoid((self.scores - self.threshold) / self.temperature)
            hard = (self.scores > self.threshold).to(soft.dtype)
            return hard + soft - soft.detach()
        return self.mask.to(self.weight.dtype)

    def soft_density(self) -> torch.Tensor:
        """threshold mode: the differentiable kept fraction Σσ((S − τ)/T) / numel."""
        return torch.sigmoid((self.scores - self.threshold) / self.temperature).mean()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.current_mask()
        if self.track_movement and w.requires_grad:
            base = self.weight.detach()

            def accumulate(grad: torch.Tensor) -> None:
                self.movement.sub_(grad.detach() * base)
            w.register_hook(accumulate)
        return F.linear(x, w, self.bias)

    @torch.no_grad()
    def final_keep(self) -> torch.Tensor:
        if self.mode == "topk":
            return topk_keep(self.scores, self.sparsity)
        if self.mode == "threshold":
            return self.scores > self.threshold
        return self.mask.clone()

    @torch.no_grad()
    def finalise(self) -> nn.Linear:
        """The plain linear with the masked weights set to zero."""
        self.linear.weight.mul_(self.final_keep().to(self.weight.dtype))
        return self.linear

    def unwrap(self) -> nn.Linear:
        return self.finalise()


def wrap_linears(model: nn.Module, family, **kw) -> dict[str, MaskedLinear]:
    """Replace every block linear by a MaskedLinear; keys '<block>.<name>'."""
    return wrap_block_linears(model, family, lambda key, layer: MaskedLinear(layer, **kw), "weight masks")


def unwrap_linears(model: nn.Module, family, masked: dict[str, MaskedLinear]) -> None:
    """Put the finalised plain linears back in place of the MaskedLinears."""
    unwrap_block_linears(model, family, masked)
