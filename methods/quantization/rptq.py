"""RPTQ (Yuan et al., 2023) [165]: reorder-based post-training quantization of weights and
activations. The channels of a linear's input have very different ranges, so one scale per
tensor wastes the grid on the outlier channels; RPTQ clusters the channels by range and gives
each cluster its own scale and zero point:

    per input channel j: (max_j, min_j) over the calibration tokens
    k-means on the points (max_j, min_j) → clusters (k-means++ starts, the best of `n_init`)
    reorder the channels so that each cluster is contiguous (permute the producer's outputs
      and the consumer's weight columns the same way: the layout the kernels need)
    activations: b_a-bit asymmetric, static, one (scale, zero) per cluster (RTN)
    weights: OPTQ/GPTQ at b_w bits, per output channel

Clusters per input (the reference's R1, R3, R4, R5; defaults 4, 4, 32, 4): the attention input,
the output projection's input (clustered within each head), the MLP input and the MLP's inner
activation. Functionally a cluster's channels share a quantizer wherever they sit, so the
simulation quantizes in the original channel order and records the permutation (`reorder`).

Deviations: the query·key and probability·value products (the reference's R2 and its
quantized matmuls) stay in full precision, as every other activation method of the harness.
The survey's rate (81.3% against fp16) is 3-bit weights.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from methods.core.arch import weight_matrix
from methods.core.base import TableRow, register
from methods.core.hooks import attach
from methods.core.stats import ACT_RANGE, HESSIAN, LinearStats
from methods.quantization.base import QuantMethod
from methods.quantization.gptq import gptq_quantize
from methods.core.settings import Bits, Count, Damp, GroupSize, Seed


def _sq_dist(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Squared distances (n, k) of low-dimensional points to the centres."""
    return (x[:, None, :] - centres[None, :, :]).pow(2).sum(-1)


def lloyd(x: torch.Tensor, centres: torch.Tensor, iters: int,
          dist: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Lloyd's iterations from `centres` (at most `iters`, until the centres stop moving); `dist(x, c)`
    gives the (n, k) squared distances."""
    k = centres.shape[0]
    for _ in range(iters):
        labels = dist(x, centres).argmin(1)
        count = torch.bincount(labels, minlength=k).unsqueeze(1)
        total = torch.zeros_like(centres).index_add_(0, labels, x)
        new = torch.where(count > 0, total / count.clamp_min(1), centres)  # an empty cluster keeps its centre
        if torch.equal(new, centres):
            break
        centres = new
    return centres


def kmeans(points: torch.Tensor, k: int, n_init: int = 10, iters: int = 100, seed: int = 0) -> torch.Tensor:
    """Cluster labels of `points` (n, d): Lloyd's k-means from k-means++ starts, the lowest inertia
    of `n_init` starts (a seeded generator: the same labels every run)."""
    x = points.double()
    n = x.shape[0]
    k = min(k, n)
    g = torch.Generator().manual_seed(seed)
    best, best_labels = torch.inf, None
    for _ in range(n_init):
        centres = x[torch.randint(n, (1,), generator=g)]
        for _ in range(1, k):  # k-means++: the next start drawn with probability ∝ distance²
            d2 = _sq_dist(x, centres).amin(1)
            p = d2 / d2.sum() if d2.sum() > 0 else torch.full_like(d2, 1 / n)
            centres = torch.cat([centres, x[torch.multinomial(p.float(), 1, generator=g)]])
        centres = lloyd(x, centres, iters, _sq_dist)
        labels = _sq_dist(x, centres).argmin(1)
        inertia = (x - centres[labels]).pow(2).sum()
        if inertia < best:
            best, best_labels = inertia, labels
    return best_labels


def cluster_channels(xmax: torch.Tensor, xmin: torch.Tensor, clusters: int, heads: int = 1,
                     seed: int = 0) -> torch.Tensor:
    """A cluster id per channel, from k-means on (max_j, min_j); with `heads`, within each head's
    contiguous slice (ids distinct across heads)."""
    pts = torch.stack([xmax, xmin], 1).float()
    per = pts.shape[0] // heads
    out = torch.empty(pts.shape[0], dtype=torch.long)
    for h in range(heads):
        out[h * per:(h + 1) * per] = kmeans(pts[h * per:(h + 1) * per].cpu(), clusters, seed=seed) + h * clusters
    return out.to(xmax.device)


def cluster_params(xmax: torch.Tensor, xmin: torch.Tensor, labels: torch.Tensor,
                   bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (scale, zero) of the asymmetric static quantizer shared by each channel's
    cluster: the cluster's range is the union of its channels' ranges (and holds 0)."""
    n = int(labels.max()) + 1
    hi = torch.full((n,), -torch.inf, device=xmax.device).scatter_reduce(0, labels, xmax.float(), "amax")
    lo = torch.full((n,), torch.inf, device=xmin.device).scatter_reduce(0, labels, xmin.float(), "amin")
    hi, lo = hi.clamp(min=0), lo.clamp(max=0)
    maxq = 2 ** bits - 1
    scale = ((hi - lo) / maxq).clamp_min(1e-8)
    zero = torch.round(-lo / scale)
    return scale[labels], zero[labels]


def attach_cluster_quant(layer: nn.Module, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> None:
    """Fake-quantize the layer's input channel-wise with its cluster's static (scale, zero)."""
    maxq = 2 ** bits - 1

    def hook(_module, args):
        x = args[0]
        s, z = scale.to(x.device, x.dtype), zero.to(x.device, x.dtype)
        q = torch.clamp(torch.round(x / s) + z, 0, maxq)
        return ((q - z) * s, *args[1:])

    attach(layer, "act_quant", hook)


@register("rptq")
class RPTQ(QuantMethod):
    stats = frozenset({HESSIAN, ACT_RANGE})
    rows = {"table5": TableRow("RPTQ", "165", uniform="UQ", columns={"preset": "rptq"})}

    def __init__(self, wbits: Bits = 3, abits: Bits = 8, clusters: tuple[int, int, int, int] = (4, 4, 32, 4),
                 group_size: GroupSize | None = -1, true_sequential: bool = True, blocksize: Count = 128,
                 percdamp: Damp = 0.01, seed: Seed = 0, preset: str = "rptq",
                 nominal_base: int | None = 16):
        super().__init__(wbits, False, group_size, None, "minmax", nominal_base)
        if not 2 <= abits <= 16:
            raise ValueError(f"abits must be 2..16 (16: weights only), got {abits}")
        if len(clusters) != 4 or min(clusters) < 1:
            raise ValueError(f"clusters are 4 positive counts (attention input, output projection input, "
                             f"MLP input, MLP inner), got {clusters}")
        self.abits, self.clusters, self.seed, self.preset = abits, tuple(clusters), seed, preset
        self.true_sequential, self.blocksize, self.percdamp = true_sequential, blocksize, percdamp
        self.reorder: dict[str, list[int]] = {}
        self.family, self.heads = None, 1
        self._labels: dict[tuple[int, int], torch.Tensor] = {}

    def compress_block(self, session, block_index: int, block: nn.Module, inputs) -> None:
        self.family = session.family
        self.heads = getattr(session.model.config, "num_attention_heads", 1)
        super().compress_block(session, block_index, block, inputs)

    def role(self, name: str) -> int:
        """Which of R1, R3, R4, R5 clusters this linear's input: its true-sequential group."""
        for i, group in enumerate(self.family.sequential):
            if name in group:
                return min(i, 3)
        raise ValueError(f"linear {name} is in none of the family's sequential groups")

    def compress(self, block_index: int, name: str, layer: nn.Module, stats: LinearStats) -> None:
        W = weight_matrix(layer)
        res = gptq_quantize(W, stats.hessian, self.spec, self.blocksize, self.percdamp)
        W.copy_(res.weight.to(W.dtype))
        self.account(block_index, name, *W.shape, n_groups=res.n_groups)
        if self.abits >= 16:
            return
        role = self.role(name)
        xmax, xmin = stats.act_range
        heads = self.heads if role == 1 and W.shape[1] % self.heads == 0 else 1
        key = (block_index, role)  # the linears of one group read the same input: cluster it once
        if key not in self._labels:
            self._labels = {key: cluster_channels(xmax, xmin, self.clusters[role], heads, self.seed)}
        labels = self._labels[key]
        self.reorder[f"{block_index}.{name}"] = torch.argsort(labels, stable=True).tolist()
        scale, zero = cluster_params(xmax, xmin, labels, self.abits)
        attach_cluster_quant(layer, scale, zero, self.abits)

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "abits": self.abits if self.abits < 16 else None, "act_mode": "per_cluster_static",
                "clusters": list(self.clusters), "preset": self.preset}
