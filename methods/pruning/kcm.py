"""KCM (Nova et al., 2023), *Gradient-Free Structured Pruning with Unlabeled Data*: FFN neurons
scored without gradients or labels, then removed.

Algorithm (paper §3):
  for each FFN layer, neuron n is the column w_n of the output projection W2:
  1. R2, representative ranking: Gaussian kernel K_ij = exp(−‖w_i − w_j‖² / σ²); kernelized
     convex masking, the multiplicative update C ← C ⊙ sqrt(K ⊘ (K C)) from C = 1/N until the
     relative change is below `tol`; a neuron's representative power is C_nn (neurons that the
     others represent well get small values)
  2. D2, data-driven ranking: the neuron's mean activation over unlabeled calibration tokens,
     min-max normalised within the layer
  3. score = R2 · D2; every layer keeps its top (1 − p) neurons, with p the neuron fraction that
     removes `flops_rate` of the encoder FLOPs (KCM prunes neurons only, uniformly over layers)
  4. the pruned neurons are removed physically (no weight tuning)
σ defaults to the median pairwise distance of the layer's neuron vectors (the paper leaves it
as a hyper-parameter).
"""
from __future__ import annotations

import torch
from torch import nn

from methods.core.base import TableRow, register
from methods.core.calibration import InputBatches, model_inputs
from methods.core.hooks import forward_hooks
from methods.pruning.encoder_units import EncoderPruning, encoder_flops, prune_with_masks
from methods.pruning.structure import struct_spec
from methods.core.settings import Count, Fraction


def gaussian_kernel(points: torch.Tensor, sigma: float) -> torch.Tensor:
    """K_ij = exp(−‖x_i − x_j‖² / σ²) over the rows of `points`."""
    d2 = torch.cdist(points, points).pow(2)
    return torch.exp(-d2 / sigma ** 2)


def median_distance(points: torch.Tensor) -> float:
    d = torch.cdist(points, points)
    return float(d[~torch.eye(d.shape[0], dtype=torch.bool)].median())


@torch.no_grad()
def representative_power(points: torch.Tensor, sigma: float | None = None, tol: float = 1e-4,
                         max_iter: int = 1000) -> torch.Tensor:
    """R2: diag(C) of kernelized convex masking over the rows of `points`."""
    x = points.detach().float()
    K = gaussian_kernel(x, sigma if sigma is not None else median_distance(x))
    n = K.shape[0]
    C = torch.full((n, n), 1.0 / n, dtype=K.dtype, device=K.device)
    for _ in range(max_iter):
        nxt = C * torch.sqrt(K / (K @ C))
        change = float((nxt - C).sum().abs() / C.abs().sum())
        C = nxt
        if change < tol:
            break
    return C.diagonal().float()


def minmax(x: torch.Tensor) -> torch.Tensor:
    lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo).clamp(min=1e-12)


@torch.no_grad()
def mean_neuron_activations(model: nn.Module, family, batches, device) -> torch.Tensor:
    """D2 before normalisation: (L, N) mean FFN activation over the non-padding tokens."""
    spec = struct_spec(family)
    blocks = family.blocks(model)
    sums = [None] * len(blocks)
    count = 0
    masks: list[torch.Tensor] = []

    def hook(i: int):
        def add(_m, args):
            a = args[0][masks[-1]].float().sum(0)
            sums[i] = a if sums[i] is None else sums[i] + a
        return add

    with forward_hooks(pre=[(dict(b.named_modules())[spec.mlp_down], hook(i)) for i, b in enumerate(blocks)]):
        for batch in batches:
            masks.append(batch["attention_mask"].bool().to(device))
            count += int(masks[-1].sum())
            model(**model_inputs(batch, device))
    return torch.stack(sums).cpu() / max(count, 1)


def uniform_neuron_fraction(model: nn.Module, family, seq_len: int, flops_rate: float) -> float:
    """The fraction of every layer's neurons whose removal takes away `flops_rate` of the FLOPs."""
    cfg = model.config
    ffn = 2 * seq_len * cfg.hidden_size * 2 * cfg.intermediate_size * cfg.num_hidden_layers
    p = flops_rate * encoder_flops(model, family, seq_len) / ffn
    if p >= 1:
        raise ValueError(f"KCM prunes FFN neurons only: they hold {ffn / encoder_flops(model, family, seq_len):.0%} "
                         f"of the FLOPs at seq_len {seq_len}, less than flops_rate={flops_rate}; lower flops_rate")
    return p


@register("kcm")
class KCM(EncoderPruning):
    rows = {"table2": TableRow("KCM", "110", "N")}
    granularity = "N"

    def __init__(self, flops_rate: Fraction = 0.2, seq_len: Count = 128, sigma: float | None = None, tol: float = 1e-4):
        super().__init__(flops_rate, seq_len)
        self.sigma, self.tol = sigma, tol

    @torch.no_grad()
    def neuron_scores(self, model: nn.Module, family, batches, device) -> torch.Tensor:
        spec = struct_spec(family)
        d2 = mean_neuron_activations(model, family, batches, device)
        r2 = torch.stack([representative_power(dict(b.named_modules())[spec.mlp_down].weight.t().to(device),
                                               self.sigma, self.tol).cpu()
                          for b in family.blocks(model)])
        return r2 * torch.stack([minmax(row) for row in d2])

    def compress_model(self, model: nn.Module, family, calib: InputBatches, device: torch.device,
                       batch_size: int = 8) -> nn.Module:
        batches = calib.batches
        cfg = model.config
        L, H, N, S = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size, self.seq_len
        p = uniform_neuron_fraction(model, family, S, self.flops_rate)
        # the fewest removals that reach the rate: ceil, so the FLOPs rate is met or exceeded
        drop = min(N - 1, int(torch.ceil(torch.tensor(p * N)).item()))
        scores = self.neuron_scores(model, family, batches, device)
        nm = torch.ones(L, N)
        for i in range(L):
            nm[i, torch.argsort(scores[i])[:drop]] = 0
        full = encoder_flops(model, family, S)
        prune_with_masks(model, family, torch.ones(L, H), nm)
        self.facts = {"flops_before": full, "flops_after": encoder_flops(model, family, S), "seq_len_for_flops": S,
                      "neurons_kept": [N - drop] * L}
        return model
