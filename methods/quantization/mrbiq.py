"""Mr.BiQ (Jeon et al., 2022) [62]: post-training non-uniform quantization by binary coding,
fitted to minimise each block's reconstruction error, in rounds.

    binary-coding quantization (BCQ) of each output row w ∈ R^n with k bit-planes:
        ŵ = Σ_i α_i b_i,   b_i ∈ {−1, +1}^n,  α ∈ R^k per row (non-uniform: 2^k levels ±α₁±α₂…)
    codes given α: each weight to the nearest of the row's 2^k levels
    α given codes: least squares, α = (BᵀB)⁻¹ Bᵀ w
    initialisation: greedy residual binarization, then alternating rounds of both
    block fit (as MREM's, teacher-forced): min ‖f̂_block(x) − f_block(x)‖² over the latent weights
        (codes through the straight-through estimator) and α, by Adam; at the start of each of
        `rounds` rounds the α are re-solved by least squares for the current codes

Stored: k bits per weight and k fp16 scales per row. Table 4's row: BERT-base, W2 with
8-bit activations, 93.6%: the paper's count with the scales (2 + 2·16/768 bits), the
full-overhead rate here too.

Deviation: one Transformer block per reconstruction unit, with full-precision inputs (the
paper also reconstructs at the layer level)."""
from __future__ import annotations

import itertools
from typing import Any

import torch

from methods.core.base import TableRow, register
from methods.quantization.mrem import MREM
from methods.quantization.quantizer import FP16_BITS
from methods.quantization.trained.fake_quant import FakeQuantLinear, WeightQuantizer
from methods.core.settings import Bits, Count, LearningRate
from methods.core.hessian import dampen


def _levels(alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every row's 2^k levels Σ_i α_i s_i and the sign patterns s (2^k × k) that make them."""
    k = alpha.shape[1]
    signs = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=k)), dtype=alpha.dtype, device=alpha.device)
    return alpha @ signs.T, signs


def bcq_codes(w: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """The sign planes (rows × n × k) putting each weight on its row's nearest level."""
    levels, signs = _levels(alpha)
    nearest = (w.unsqueeze(-1) - levels.unsqueeze(1)).abs().argmin(-1)
    return signs[nearest]


def bcq_fit(w: torch.Tensor, k: int, iters: int = 10) -> torch.Tensor:
    """α (rows × k): greedy residual binarization, then alternating codes / least-squares α."""
    r, alpha = w.clone(), []
    for _ in range(k):
        a = r.abs().mean(1, keepdim=True)
        alpha.append(a)
        r = r - a * torch.where(r >= 0, 1.0, -1.0)
    alpha = torch.cat(alpha, 1)
    for _ in range(iters):
        alpha = bcq_refit(w, bcq_codes(w, alpha))
    return alpha


def bcq_refit(w: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Least-squares α per row for fixed sign planes (a tiny ridge keeps a repeated plane solvable)."""
    gram = dampen(codes.transpose(1, 2) @ codes, 1e-6)     # diag = the row's n weights: a ridge of 1e-6·n
    rhs = codes.transpose(1, 2) @ w.unsqueeze(-1)
    return torch.linalg.solve(gram, rhs).squeeze(-1)


class BCQWeight(WeightQuantizer):
    """ŵ = Σ_i α_i b_i per row: codes from the latent weight (nearest level, straight through),
    α a parameter."""

    def __init__(self, k: int, weight: torch.Tensor):
        super().__init__()
        self.bits = k
        self.alpha = torch.nn.Parameter(bcq_fit(weight.detach().float(), k).to(weight.dtype))
        self.alpha.no_decay = True

    @torch.no_grad()
    def refit(self, w: torch.Tensor) -> None:
        self.alpha.copy_(bcq_refit(w.float(), bcq_codes(w.float(), self.alpha.float())).to(self.alpha.dtype))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        codes = bcq_codes(w.detach(), self.alpha.detach())
        hard = (codes * self.alpha.unsqueeze(1)).sum(-1)
        return hard + (w - w.detach())

    def stats(self, w: torch.Tensor) -> int:
        return self.alpha.numel()


@register("mrbiq")
class MrBiQ(MREM):
    """`wbits`: bit-planes per weight; `rounds`: least-squares re-solves of α during each block's
    fit; `steps`, `lr`, `abits` as MREM's."""
    smoke = ({"steps": 20, "lr": 0.001, "rounds": 2},)

    rows = {"table4": TableRow("Mr.BiQ", "62", uniform="NUQ", columns={"preset": "mrbiq"})}
    stat_bits = FP16_BITS

    def __init__(self, wbits: Bits = 2, abits: Bits = 8, steps: int = 200, lr: LearningRate = 1e-4, rounds: Count = 4,
                 preset: str = "mrbiq", nominal_base: int | None = None):
        if not 1 <= wbits <= 4:
            raise ValueError(f"Mr.BiQ binary coding takes 1..4 bit-planes, got wbits={wbits}")
        if rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {rounds}")
        super().__init__(wbits, abits, steps, lr, preset, nominal_base)
        self.rounds = rounds

    def weight_quantizer(self, weight: torch.Tensor) -> WeightQuantizer:
        return BCQWeight(self.spec.bits, weight)

    def before_step(self, step: int, wrapped: dict[str, FakeQuantLinear]) -> None:
        every = max(1, self.steps // self.rounds)
        if step % every == 0 and step // every < self.rounds:
            for m in wrapped.values():
                m.weight_q.refit(m.weight)

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "rounds": self.rounds, "quantizer": "binary coding (BCQ), per-row α"}
