"""AWQ (Lin et al., 2024): activation-aware weight quantization, weights only.

Algorithm (paper §3 / reference `run_awq`, `auto_scale_block`, `auto_clip_block`):
  per block, from the dense block's calibration inputs X of each linear:
  1. for each (previous op, linears) pair: x̄ = mean|X| per input channel;
     for α in {0, 1/n, …, (n-1)/n}:  s = x̄^α / sqrt(max · min);  Ŵ = Q(W·s)/s
         loss(α) = ‖X Wᵀ − X Ŵᵀ‖²  over the pair's linears
     fold the best s into the previous op (its outputs / s, the linears' inputs · s)
  2. clipping: per linear (not q/k) and per (row, group), shrink the max |w| over a grid
     (down to `max_shrink`) to minimise the group's output error on sampled tokens
  3. round-to-nearest, group-wise (default 4 bits, g128, with zero point)
As in the reference, the next block's inputs come from the dense block. The searches use the
linears' own outputs (the reference inspects the enclosing attention / MLP module) on a fixed
random sample of `search_tokens` calibration tokens.
"""
from __future__ import annotations

import torch
from torch import nn

from methods.core.arch import fold_scale, scale_pairs, weight_matrix
from methods.core.base import TableRow, register
from methods.quantization.base import QuantMethod
from methods.quantization.quantizer import QuantSpec, fake_quantize, find_params, quantize_weight
from methods.core.stats import INPUTS
from methods.core.settings import Bits, Count, GroupSize, Seed


def rtn(W: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    return quantize_weight(W, spec).dequantize()


def search_scale(x: torch.Tensor, weights: list[torch.Tensor], spec: QuantSpec, n_grid: int = 20
                 ) -> tuple[torch.Tensor, list[float]]:
    """AWQ's grid search over α; returns the best scale and the loss of every α (α=0 first)."""
    x = x.float()
    ref = [x @ w.float().t() for w in weights]
    x_mean = x.abs().mean(0)
    losses, best, best_s = [], float("inf"), torch.ones_like(x_mean)
    for k in range(n_grid):
        s = x_mean.pow(k / n_grid).clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        loss = sum(float((x @ (rtn(w.float() * s, spec) / s).t() - r).pow(2).mean()) for w, r in zip(weights, ref))
        losses.append(loss)
        if loss < best:
            best, best_s = loss, s
    return best_s, losses


def search_clip(x: torch.Tensor, W: torch.Tensor, spec: QuantSpec, n_grid: int = 20, max_shrink: float = 0.5,
                row_chunk: int = 64) -> torch.Tensor:
    """AWQ's clipping search: per (row, group) the max |w| minimising that group's output error."""
    g = spec.group_size if spec.granularity == "group" else W.shape[1]
    rows, cols = W.shape
    pad = (-cols) % g  # a ragged last group: zero columns change neither its range nor its output
    W = torch.nn.functional.pad(W.float(), (0, pad))
    n_groups = (cols + pad) // g
    xg = torch.nn.functional.pad(x.float(), (0, pad)).reshape(-1, n_groups, g)   # (tokens, groups, g)
    best_max = torch.empty(rows, n_groups, device=W.device)
    for r0 in range(0, rows, row_chunk):
        w = W[r0:r0 + row_chunk].float().reshape(-1, n_groups, g)   # (r, groups, g)
        org_max = w.abs().amax(-1, keepdim=True)
        ref = torch.einsum("tgc,rgc->rgt", xg, w)
        best_err = torch.full(org_max.shape[:2], float("inf"), device=W.device)
        best = org_max[..., 0].clone()
        for i in range(int(max_shrink * n_grid)):
            mx = org_max * (1 - i / n_grid)
            cur = torch.clamp(w, -mx, mx)
            s, z = find_params(cur.reshape(-1, g), spec)
            q = fake_quantize(cur.reshape(-1, g), s, z, spec.maxq).reshape(w.shape)
            err = (torch.einsum("tgc,rgc->rgt", xg, q) - ref).pow(2).mean(-1)
            better = err < best_err
            best_err[better], best[better] = err[better], mx[..., 0][better]
        best_max[r0:r0 + row_chunk] = best
    return best_max


@register("awq")
class AWQ(QuantMethod):
    stats = frozenset({INPUTS})
    propagate_compressed = False
    rows = {"table5": TableRow("AWQ", "95", uniform="UQ")}

    def __init__(self, wbits: Bits = 4, group_size: GroupSize | None = 128, sym: bool = False, n_grid: Count = 20,
                 clip: bool = True, max_shrink: float = 0.5, search_tokens: Count = 8192, clip_tokens: Count = 512,
                 seed: Seed = 0, nominal_base: int | None = None):
        super().__init__(wbits, sym, group_size, None, "minmax", nominal_base)
        self.n_grid, self.clip_search, self.max_shrink = n_grid, clip, max_shrink
        self.search_tokens, self.clip_tokens, self.seed = search_tokens, clip_tokens, seed
        self.alphas: dict[str, float] = {}

    def _sample(self, x: torch.Tensor, n: int) -> torch.Tensor:
        if x.shape[0] <= n:
            return x
        g = torch.Generator().manual_seed(self.seed)
        return x[torch.randperm(x.shape[0], generator=g)[:n].to(x.device)]

    def compress_block(self, session, block_index: int, block: nn.Module, inputs) -> None:
        linears = session.family.linears(block)
        found = session.gather(block, linears, self.stats, inputs)
        xs = {n: self._sample(found[n].inputs, self.search_tokens) for n in linears}
        for prev, group in scale_pairs(session.family, block):
            s, losses = search_scale(xs[group[0]], [weight_matrix(linears[n]) for n in group], self.spec, self.n_grid)
            self.alphas[f"{block_index}.{prev}"] = losses.index(min(losses)) / self.n_grid
            fold_scale(block, prev, group, s)
            for n in group:
                xs[n] = xs[n] / s.to(xs[n].dtype)
        for name, layer in linears.items():
            W = weight_matrix(layer)
            if self.clip_search and not name.endswith(("q_proj", "k_proj", "query_key_value", "c_attn")):
                mx = search_clip(self._sample(xs[name], self.clip_tokens), W, self.spec, self.n_grid, self.max_shrink)
                g = -(-W.shape[1] // mx.shape[1])
                bound = mx.repeat_interleave(g, dim=1)[:, :W.shape[1]].to(W.dtype)
                W.copy_(torch.clamp(W, -bound, bound))
            qt = quantize_weight(W, self.spec)
            W.copy_(qt.dequantize().to(W.dtype))
            self.store_codes(layer, qt)
            self.account(block_index, name, *W.shape)

    def summary(self):
        return {**super().summary(), "alpha_per_pair": self.alphas}
